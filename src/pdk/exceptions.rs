//! The exceptions of `kong_pdk.exception` a handler meets, imported once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static PLUGIN_EXIT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static EVENT_ABANDONED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PDK_EXCEPTION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

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

fn raise(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, name: &str, msg: String) -> PyErr {
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

/// How an event ended, for the error its `kong` object raises afterwards.
#[derive(Clone, Copy)]
pub enum Ending {
    /// `kong.response.exit` or `error` sent the response.
    Exited,
    /// Kong gave up on the event (no Step in time, or shutdown).
    Abandoned,
    /// The handler returned or raised.
    Over,
}

/// What a PDK call on event `event_id` raises once the event has ended.
pub fn ended_error(py: Python<'_>, ending: Ending, event_id: u64) -> PyErr {
    match ending {
        Ending::Exited => plugin_exit(
            py,
            "the response was already sent with kong.response.exit/error".into(),
        ),
        Ending::Abandoned => event_abandoned(py, format!("event {event_id} was abandoned by Kong")),
        Ending::Over => pdk_exception(
            py,
            format!("event {event_id} has ended; its kong object can no longer be used"),
        ),
    }
}
