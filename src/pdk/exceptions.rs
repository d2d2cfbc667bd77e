//! The exceptions of `kong_pdk.exception` a handler meets, imported once.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::events::Stage;

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

/// What a PDK call on event `event_id` raises once the event has ended, by
/// how it ended.
pub fn ended_error(py: Python<'_>, stage: Stage, event_id: u64) -> PyErr {
    match stage {
        Stage::Exited => plugin_exit(
            py,
            "the response was already sent with kong.response.exit/error".into(),
        ),
        Stage::Abandoned => event_abandoned(py, format!("event {event_id} was abandoned by Kong")),
        Stage::Running | Stage::Finished => pdk_exception(
            py,
            format!("event {event_id} has ended; its kong object can no longer be used"),
        ),
    }
}

/// What a second PDK call of one event raises while its first waits for
/// Kong: a mistake in the plugin, not an answer from Kong, the same in every
/// model.
pub fn concurrent_call_error(method: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{method}: another PDK call of this event is already waiting for Kong; Kong \
         answers one call of an event at a time, so await each PDK call before making \
         the next (calls from threads or tasks of one handler must not overlap)"
    ))
}
