//! The exceptions of `kong_pdk.exception` a handler meets, imported once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

pub(super) static PLUGIN_EXIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
pub(super) static EVENT_ABANDONED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
pub(super) static PDK_EXCEPTION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn exception_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "kong_pdk.exception", name)
}

pub fn plugin_exit_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    exception_type(py, &PLUGIN_EXIT, "PluginExit")
}

pub fn event_abandoned_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    exception_type(py, &EVENT_ABANDONED, "EventAbandoned")
}

pub(super) fn raise(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    msg: String,
) -> PyErr {
    match exception_type(py, cell, name) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    }
}

/// `kong_pdk.exception.PDKException(msg)`.
pub fn pdk_exception(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &PDK_EXCEPTION, "PDKException", msg)
}

/// `kong_pdk.exception.PluginExit(msg)`.
pub fn plugin_exit(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &PLUGIN_EXIT, "PluginExit", msg)
}

/// `kong_pdk.exception.EventAbandoned(msg)`.
pub fn event_abandoned(py: Python<'_>, msg: String) -> PyErr {
    raise(py, &EVENT_ABANDONED, "EventAbandoned", msg)
}
