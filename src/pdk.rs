//! The `kong` object handed to phase handlers: our bridge to Kong's PDK.
//!
//! `kong.request.get_header("host")` walks attribute names down a process-wide
//! tree of dotted paths (each path is resolved and interned once) and the call
//! becomes one `{Method, Args}` message on the event's channel. The handler's
//! thread then waits for Kong's Step with the GIL released (design.md: the GIL
//! is held only while Python runs).
//!
//! Two PDK rules live here:
//! * terminal calls (`kong.response.exit`/`error`) are sent, the event ends at
//!   once and the handler unwinds with `PluginExit` (protocol.md §5.2.3);
//! * an argument list with `None` before a later argument would be cut by Lua's
//!   `unpack` (protocol.md §11.2), so such a call is fixed or refused here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use tokio::sync::{mpsc, oneshot};

use crate::convert::{value_to_py, write_py, Unsendable};
use crate::events::{Answer, Out};

/// How a dotted PDK path behaves when called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CallKind {
    Regular,
    /// Kong never answers and never resumes the event.
    Terminal,
    /// `kong.log*`: any argument is accepted and sent as `str()` if needed.
    Log,
}

/// One node of the attribute tree (`kong`, `kong.request`, ...).
pub struct PdkPath {
    pub name: Arc<str>,
    pub kind: CallKind,
    children: RwLock<HashMap<Box<str>, Arc<PdkPath>>>,
}

impl PdkPath {
    fn new(name: &str) -> Self {
        let kind = match name {
            "kong.response.exit" | "kong.response.error" => CallKind::Terminal,
            n if n == "kong.log" || n.starts_with("kong.log.") => CallKind::Log,
            _ => CallKind::Regular,
        };
        PdkPath {
            name: Arc::from(name),
            kind,
            children: RwLock::new(HashMap::new()),
        }
    }

    pub fn root() -> &'static Arc<PdkPath> {
        static ROOT: OnceLock<Arc<PdkPath>> = OnceLock::new();
        ROOT.get_or_init(|| Arc::new(PdkPath::new("kong")))
    }

    /// The child path, created on first use and shared afterwards.
    pub fn child(&self, attr: &str) -> Arc<PdkPath> {
        if let Some(c) = self
            .children
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(attr)
        {
            return Arc::clone(c);
        }
        let mut children = self.children.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            children
                .entry(Box::from(attr))
                .or_insert_with(|| Arc::new(PdkPath::new(&format!("{}.{attr}", self.name)))),
        )
    }

    /// Resolves a full dotted name (used by the executor's own calls).
    pub fn resolve(dotted: &str) -> Arc<PdkPath> {
        let mut node = Arc::clone(Self::root());
        for part in dotted.split('.').skip(1) {
            node = node.child(part);
        }
        node
    }
}

const RUNNING: u8 = 0;
const EXITED: u8 = 1;
const ABANDONED: u8 = 2;
const FINISHED: u8 = 3;

/// Per-event state shared by the `kong` objects of one event.
pub struct EventCtx {
    pub event_id: u64,
    outputs: mpsc::UnboundedSender<Out>,
    lua_style: bool,
    state: AtomicU8,
}

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

impl EventCtx {
    pub fn new(event_id: u64, outputs: mpsc::UnboundedSender<Out>, lua_style: bool) -> Self {
        EventCtx {
            event_id,
            outputs,
            lua_style,
            state: AtomicU8::new(RUNNING),
        }
    }

    pub fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ABANDONED
    }

    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    /// The handler returned: Kong gets `"ret"` unless the event already ended.
    pub fn finish(&self) {
        if self
            .state
            .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _ = self.outputs.send(Out::Done);
        }
    }

    fn ended_error(&self, py: Python<'_>) -> PyErr {
        match self.state.load(Ordering::Acquire) {
            EXITED => raise(
                py,
                &PLUGIN_EXIT,
                "PluginExit",
                "the response was already sent with kong.response.exit/error".into(),
            ),
            ABANDONED => raise(
                py,
                &EVENT_ABANDONED,
                "EventAbandoned",
                format!("event {} was abandoned by Kong", self.event_id),
            ),
            _ => raise(
                py,
                &PDK_EXCEPTION,
                "PDKException",
                format!(
                    "event {} has ended; its kong object can no longer be used",
                    self.event_id
                ),
            ),
        }
    }

    /// Sends a terminal call and ends the event.
    pub fn terminal(&self, method: Arc<str>, args: Vec<u8>) -> bool {
        if self
            .state
            .compare_exchange(RUNNING, EXITED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.outputs.send(Out::Terminal { method, args }).is_ok()
    }

    /// Sends one PDK call and waits, detached, for Kong's answer.
    pub fn call(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<Answer> {
        if !self.is_running() {
            return Err(self.ended_error(py));
        }
        let (answer, answered) = oneshot::channel();
        let sent = self.outputs.send(Out::Call {
            method,
            args,
            answer,
        });
        let got = match sent {
            Ok(()) => py.detach(move || answered.blocking_recv()),
            Err(_) => {
                self.state.store(ABANDONED, Ordering::Release);
                return Err(self.ended_error(py));
            }
        };
        got.map_err(|_| {
            // The registry dropped our pending answer: deadline or shutdown.
            let _ = self.state.compare_exchange(
                RUNNING,
                ABANDONED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            self.ended_error(py)
        })
    }
}

/// The `kong` object and every `kong.<path>` below it.
#[pyclass(frozen, module = "kong_pdk._core", name = "PdkProxy")]
pub struct PdkProxy {
    ctx: Arc<EventCtx>,
    path: Arc<PdkPath>,
}

impl PdkProxy {
    pub fn root(ctx: Arc<EventCtx>) -> Self {
        PdkProxy {
            ctx,
            path: Arc::clone(PdkPath::root()),
        }
    }
}

/// Encodes call arguments, dealing with Lua's nil cut (protocol.md §11.2).
fn encode_args(path: &PdkPath, args: &Bound<'_, PyTuple>) -> PyResult<Vec<u8>> {
    let items: Vec<Bound<'_, PyAny>> = args.iter().collect();
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
    fn __getattr__(&self, name: &Bound<'_, PyString>) -> PyResult<PdkProxy> {
        let name = name.to_str()?;
        if name.starts_with("__") {
            return Err(PyAttributeError::new_err(name.to_string()));
        }
        Ok(PdkProxy {
            ctx: Arc::clone(&self.ctx),
            path: self.path.child(name),
        })
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if kwargs.is_some_and(|k| !k.is_empty()) {
            return Err(PyTypeError::new_err(format!(
                "{}() takes positional arguments only",
                self.path.name
            )));
        }
        let encoded = encode_args(&self.path, args)?;
        if self.path.kind == CallKind::Terminal {
            if !self.ctx.terminal(Arc::clone(&self.path.name), encoded) {
                return Err(self.ctx.ended_error(py));
            }
            return Err(raise(
                py,
                &PLUGIN_EXIT,
                "PluginExit",
                format!("{} ended the request", self.path.name),
            ));
        }
        let answer = self.ctx.call(py, Arc::clone(&self.path.name), encoded)?;
        let lua_style = self.ctx.lua_style;
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
                    Err(raise(py, &PDK_EXCEPTION, "PDKException", msg))
                }
            }
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<kong PDK {} (event {})>",
            self.path.name, self.ctx.event_id
        )
    }
}
