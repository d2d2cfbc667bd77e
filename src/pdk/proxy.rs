//! The `kong` object and every `kong.<path>` below it: attribute access walks
//! the path tree, a call binds and encodes its arguments and hands them to
//! the event.

use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::event::PdkTarget;
use super::exceptions::{raise, PLUGIN_EXIT};
use super::path::{warn_wrong_phase, CallKind, PdkPath};
use crate::convert::{write_py, Unsendable};

/// The `kong` object and every `kong.<path>` below it.
#[pyclass(frozen, module = "kong_pdk._core", name = "PdkProxy")]
pub struct PdkProxy {
    ctx: Arc<dyn PdkTarget>,
    path: Arc<PdkPath>,
}

impl PdkProxy {
    pub fn root<T: PdkTarget + 'static>(ctx: Arc<T>) -> Self {
        PdkProxy {
            ctx,
            path: Arc::clone(PdkPath::root()),
        }
    }
}

/// Lays keyword arguments out by the function's parameter names.
fn bind_args<'py>(
    path: &PdkPath,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut items: Vec<Bound<'py, PyAny>> = args.iter().collect();
    if let Some(f) = path
        .function
        .filter(|f| !f.variadic && items.len() > f.params.len())
    {
        return Err(PyTypeError::new_err(format!(
            "{}() takes at most {} arguments ({}) but {} were given",
            path.name,
            f.params.len(),
            f.params.join(", "),
            items.len()
        )));
    }
    let Some(kwargs) = kwargs.filter(|k| !k.is_empty()) else {
        return Ok(items);
    };
    let params = path.function.map(|f| f.params.as_slice()).unwrap_or(&[]);
    let py = args.py();
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        let Some(pos) = params.iter().position(|p| *p == key) else {
            return Err(PyTypeError::new_err(format!(
                "{}() got an unexpected keyword argument '{key}' (parameters: {})",
                path.name,
                params.join(", ")
            )));
        };
        if pos < items.len() && !items[pos].is_none() {
            return Err(PyTypeError::new_err(format!(
                "{}() got multiple values for argument '{key}'",
                path.name
            )));
        }
        while items.len() <= pos {
            items.push(py.None().into_bound(py));
        }
        items[pos] = value;
    }
    Ok(items)
}

/// Encodes call arguments, dealing with Lua's nil cut (docs/protocol.md §11.2).
fn encode_args(path: &PdkPath, items: &[Bound<'_, PyAny>]) -> PyResult<Vec<u8>> {
    // Trailing Nones change nothing for Lua: drop them.
    let mut n = items.len();
    while n > 0 && items[n - 1].is_none() {
        n -= 1;
    }
    let unsendable = if path.kind == CallKind::Log {
        Unsendable::Stringify
    } else {
        Unsendable::Refuse
    };
    let mut out = Vec::with_capacity(32);
    let _ = rmp::encode::write_array_len(&mut out, n as u32);
    for (i, item) in items[..n].iter().enumerate() {
        if item.is_none() {
            match path.kind {
                // exit(status, None, headers): an empty body is what was meant.
                CallKind::Terminal if &*path.name == "kong.response.exit" && i == 1 => {
                    rmp::encode::write_str(&mut out, "").ok();
                }
                CallKind::Log => {
                    rmp::encode::write_str(&mut out, "None").ok();
                }
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{}: argument {} is None but a later argument is given; \
                         Kong would drop every argument from the None on \
                         (Lua cuts argument lists at the first nil)",
                        path.name,
                        i + 1
                    )))
                }
            }
            continue;
        }
        write_py(&mut out, item, unsendable)?;
    }
    Ok(out)
}

#[pymethods]
impl PdkProxy {
    /// Every plain name is a PDK path. Resolved here first, rather than in
    /// `__getattr__` after the generic lookup failed: that failure formats
    /// and discards an AttributeError, twice per PDK call. Dunder names go
    /// the usual way.
    fn __getattribute__<'py>(
        slf: &Bound<'py, Self>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let text = name.to_str()?;
        if text.starts_with("__") {
            // SAFETY: both pointers are valid, GIL-bound objects for the
            // duration of the call; the result is a new reference or NULL
            // with an exception set, which `from_owned_ptr_or_err` takes.
            return unsafe {
                Bound::from_owned_ptr_or_err(
                    slf.py(),
                    pyo3::ffi::PyObject_GenericGetAttr(slf.as_ptr(), name.as_ptr()),
                )
            };
        }
        let this = slf.get();
        let path = this.path.child(text).map_err(PyAttributeError::new_err)?;
        Ok(Bound::new(
            slf.py(),
            PdkProxy {
                ctx: Arc::clone(&this.ctx),
                path,
            },
        )?
        .into_any())
    }

    /// Reached only when `__getattribute__` failed: gives the reason (an
    /// unknown PDK name and the closest real one) again, as pyo3 replaces
    /// the first AttributeError's message with the bare name.
    fn __getattr__(&self, name: &Bound<'_, PyString>) -> PyResult<PdkProxy> {
        let name = name.to_str()?;
        if name.starts_with("__") {
            return Err(PyAttributeError::new_err(name.to_string()));
        }
        let path = self.path.child(name).map_err(PyAttributeError::new_err)?;
        Ok(PdkProxy {
            ctx: Arc::clone(&self.ctx),
            path,
        })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(function) = self.path.function else {
            return Err(PyTypeError::new_err(format!(
                "{} is a namespace of the Kong PDK, not a function",
                self.path.name
            )));
        };
        if let Some(why) = &function.not_callable {
            return Err(PyTypeError::new_err(format!(
                "{} cannot be called from an external plugin: {why}",
                self.path.name
            )));
        }
        warn_wrong_phase(&self.path, self.ctx.phase());
        let items = bind_args(&self.path, args, kwargs)?;
        let encoded = encode_args(&self.path, &items)?;
        if self.path.kind == CallKind::Terminal {
            self.ctx
                .terminal(py, Arc::clone(&self.path.name), encoded)?;
            return Err(raise(
                py,
                &PLUGIN_EXIT,
                "PluginExit",
                format!("{} ended the request", self.path.name),
            ));
        }
        Arc::clone(&self.ctx).call(py, Arc::clone(&self.path.name), encoded)
    }

    fn __repr__(&self) -> String {
        format!(
            "<kong PDK {} (event {})>",
            self.path.name,
            self.ctx.event_id()
        )
    }
}
