//! The `kong` object and every `kong.<path>` below it: attribute access walks
//! the path tree, a call binds and encodes its arguments and hands them to
//! the event.
//!
//! Each proxy keeps the children it has handed out, so within one event
//! `kong.request` is built once and the twentieth `kong.request.get_header`
//! costs two pointer compares rather than two path lookups and two new
//! Python objects (benches/pdk_call.py measures it).

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use super::event::PdkTarget;
use super::exceptions::plugin_exit;
use super::path::{warn_wrong_phase, CallKind, PdkPath};
use crate::convert::{write_py, Unsendable};

/// The `kong` object and every `kong.<path>` below it.
#[pyclass(frozen, module = "kong_pdk._core", name = "PdkProxy")]
pub struct PdkProxy {
    ctx: Arc<dyn PdkTarget>,
    path: Arc<PdkPath>,
    /// The children handed out so far, by the attribute name they were
    /// asked for (the interned string of the handler's code, so a pointer
    /// compare finds them); a handful per proxy, hence a list.
    children: Mutex<Vec<(Py<PyString>, Py<PdkProxy>)>>,
}

impl PdkProxy {
    pub fn root<T: PdkTarget + 'static>(ctx: Arc<T>) -> Self {
        PdkProxy::new(ctx, Arc::clone(PdkPath::root()))
    }

    fn new(ctx: Arc<dyn PdkTarget>, path: Arc<PdkPath>) -> Self {
        PdkProxy {
            ctx,
            path,
            children: Mutex::new(Vec::new()),
        }
    }

    fn children(&self) -> MutexGuard<'_, Vec<(Py<PyString>, Py<PdkProxy>)>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The child proxy for `name`: the one handed out before, or a new one.
    /// No Python code runs while the list is locked (only reference counts
    /// change), so a finalizer that touches this proxy cannot deadlock.
    fn child<'py>(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PdkProxy>> {
        let py = name.py();
        let cached = self
            .children()
            .iter()
            .find(|(key, _)| key.as_ptr() == name.as_ptr())
            .map(|(_, child)| child.clone_ref(py));
        if let Some(child) = cached {
            return Ok(child.into_bound(py));
        }
        let path = self.path.child(name.to_str()?);
        let fresh = Bound::new(py, PdkProxy::new(Arc::clone(&self.ctx), path))?;
        let mut children = self.children();
        // The same name in another string object (built at run time), or
        // another thread of the event first: one child per path, and the
        // new string as a second key for it, so that a handler whose first
        // lookup used a built name still finds the literal one by pointer.
        // A handler that builds a new string every time would add a key per
        // call; past `MAX_KEYS` such lookups stay on this slower path.
        let same_path = children
            .iter()
            .find(|(_, child)| Arc::ptr_eq(&child.get().path, &fresh.get().path))
            .map(|(_, child)| child.clone_ref(py));
        let child = match same_path {
            Some(child) => child.into_bound(py),
            None => fresh.clone(),
        };
        if children.len() < MAX_KEYS {
            children.push((name.clone().unbind(), child.clone().unbind()));
        }
        drop(children);
        Ok(child)
    }
}

/// At most this many names are remembered per proxy (the widest PDK
/// namespace, `kong.request`, has 22 functions).
const MAX_KEYS: usize = 64;

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
    if path.kind == CallKind::Log && &*path.name != SET_SERIALIZE_VALUE {
        return encode_log_args(items);
    }
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

/// `kong.log.set_serialize_value(key, value)` stores data, not a message:
/// its value keeps its type (`True` stays a boolean in the serialized log).
const SET_SERIALIZE_VALUE: &str = "kong.log.set_serialize_value";

/// The arguments of a log message (`kong.log(...)`, `kong.log.err(...)`,
/// `kong.log.inspect(...)`) as the official package renders them, so that
/// Kong's error log reads the same line with either server: an argument of
/// exactly `str`, `int`, `list` or `dict` is sent as it is (a list's or
/// dict's items too), anything else (bool, float, None, bytes, subclasses,
/// other objects) as its Python `str()`. Every argument is sent, a trailing
/// `None` too.
fn encode_log_args(items: &[Bound<'_, PyAny>]) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    let n = u32::try_from(items.len())
        .map_err(|_| PyTypeError::new_err("too many arguments for one PDK call"))?;
    let _ = rmp::encode::write_array_len(&mut out, n);
    for item in items {
        let as_is = item.is_exact_instance_of::<PyString>()
            || item.is_exact_instance_of::<PyInt>()
            || item.is_exact_instance_of::<PyList>()
            || item.is_exact_instance_of::<PyDict>();
        if as_is {
            write_py(&mut out, item, Unsendable::Stringify)?;
        } else {
            write_py(&mut out, item.str()?.as_any(), Unsendable::Stringify)?;
        }
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
        Ok(slf.get().child(name)?.into_any())
    }

    /// Reached only when `__getattribute__` failed, which only a dunder
    /// name can (every other name is a path): the plain AttributeError.
    fn __getattr__(&self, name: &Bound<'_, PyString>) -> PyResult<PdkProxy> {
        let name = name.to_str()?;
        if name.starts_with("__") {
            return Err(PyAttributeError::new_err(name.to_string()));
        }
        Ok(PdkProxy::new(Arc::clone(&self.ctx), self.path.child(name)))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(function) = self.path.function else {
            if !self.path.unknown {
                return Err(PyTypeError::new_err(format!(
                    "{} is a namespace of the Kong PDK, not a function",
                    self.path.name
                )));
            }
            // Sent as it is, as the official package does (its first use
            // was warned about in path.rs).
            let items = bind_args(&self.path, args, kwargs)?;
            let encoded = encode_args(&self.path, &items)?;
            return Arc::clone(&self.ctx).call(py, Arc::clone(&self.path.name), encoded);
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
            return Err(plugin_exit(
                py,
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
