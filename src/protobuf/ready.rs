//! The awaitable an `async def` handler's PDK call returns on ProtoBuf:1.
//!
//! On this wire a PDK call is answered on the event's own connection, by
//! the thread that runs the handler, so the answer is there by the time the
//! call returns: `await` hands it over at once, without yielding to a loop.

use std::sync::Mutex;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(frozen, module = "kong_pdk._core", name = "ReadyAnswer")]
pub struct Ready {
    value: Mutex<Option<Py<PyAny>>>,
}

impl Ready {
    pub fn new(value: Bound<'_, PyAny>) -> Self {
        Ready {
            value: Mutex::new(Some(value.unbind())),
        }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Finishes at once with the answer (a 1-tuple, so that a tuple answer
    /// is not taken for the exception's arguments).
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let value = self
            .value
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }

    fn send(&self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        self.__next__(py)
    }
}
