//! Kong's answer to a PDK call as the plugin sees it.

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::exceptions::pdk_exception;
use crate::convert::value_to_py;
use crate::events::Answer;

/// Kong's answer as the plugin sees it: `(value, err)` in lua style, the
/// value or a raised `PDKException` in python style.
pub fn answer_to_py(py: Python<'_>, answer: Answer, lua_style: bool) -> PyResult<Bound<'_, PyAny>> {
    match answer {
        Answer::Value(v) => {
            let value = match v {
                Some(v) => value_to_py(py, &v)?,
                None => py.None().into_bound(py),
            };
            if lua_style {
                Ok(PyTuple::new(py, [value, py.None().into_bound(py)])?.into_any())
            } else {
                Ok(value)
            }
        }
        Answer::Error(msg) => {
            if lua_style {
                Ok(PyTuple::new(
                    py,
                    [py.None().into_bound(py), PyString::new(py, &msg).into_any()],
                )?
                .into_any())
            } else {
                Err(pdk_exception(py, msg))
            }
        }
    }
}
