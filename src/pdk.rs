//! The `kong` object handed to phase handlers: our bridge to Kong's PDK.
//!
//! `kong.request.get_header("host")` walks attribute names down a process-wide
//! tree of dotted paths (each path is resolved and interned once) and the call
//! becomes one `{Method, Args}` reply to Kong, written through the event's
//! `EventLink` (events/link.rs). The handler then waits for Kong's Step with the GIL
//! released (docs/architecture.md, "Design rules": the GIL is held only while Python runs), or, on an
//! event loop, gets a token the loop resolves later.
//!
//! Two PDK rules live here:
//! * terminal calls (`kong.response.exit`/`error`) are sent, the event ends at
//!   once and the handler unwinds with `PluginExit` (docs/protocol.md §5.2.3);
//! * an argument list with `None` before a later argument would be cut by Lua's
//!   `unpack` (docs/protocol.md §11.2), so such a call is fixed or refused here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use tokio::sync::oneshot;

use crate::convert::{value_to_py, write_py, Unsendable};
use crate::events::{Answer, EventLink, LinkError, Resume};
use crate::pdk_table::{FunctionInfo, PdkTable};
use crate::phase::Phase;

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
    /// `None` for a pure namespace (`kong.request`).
    pub function: Option<&'static FunctionInfo>,
    children: RwLock<HashMap<Box<str>, Arc<PdkPath>>>,
}

impl PdkPath {
    fn new(name: &str, function: Option<&'static FunctionInfo>) -> Self {
        let kind = match name {
            _ if function.is_some_and(|f| f.terminal) => CallKind::Terminal,
            n if n == "kong.log" || n.starts_with("kong.log.") => CallKind::Log,
            _ => CallKind::Regular,
        };
        PdkPath {
            name: Arc::from(name),
            kind,
            function,
            children: RwLock::new(HashMap::new()),
        }
    }

    pub fn root() -> &'static Arc<PdkPath> {
        static ROOT: OnceLock<Arc<PdkPath>> = OnceLock::new();
        ROOT.get_or_init(|| Arc::new(PdkPath::new("kong", None)))
    }

    /// The child path, resolved against the PDK function list on first use
    /// and shared afterwards. An unknown name is an error naming the closest
    /// real one.
    pub fn child(&self, attr: &str) -> Result<Arc<PdkPath>, String> {
        if let Some(c) = self
            .children
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(attr)
        {
            return Ok(Arc::clone(c));
        }
        let full = format!("{}.{attr}", self.name);
        let table = PdkTable::get();
        let function = table.function(&full);
        if function.is_none() && !table.is_namespace(&full) {
            return Err(match table.closest(&full) {
                Some(near) => {
                    format!("{full} is not a Kong PDK function or namespace; did you mean {near}?")
                }
                None => format!("{full} is not a Kong PDK function or namespace"),
            });
        }
        let mut children = self.children.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(children.entry(Box::from(attr)).or_insert_with(
            || Arc::new(PdkPath::new(&full, function)),
        )))
    }
}

/// Logs a call made in a phase where Kong does not allow it, once per pair.
fn warn_wrong_phase(path: &PdkPath, phase: Phase) {
    let Some(allowed) = path.function.and_then(|f| f.phases.as_ref()) else {
        return;
    };
    if allowed.contains(&phase) {
        return;
    }
    type Seen = HashSet<(Arc<str>, &'static str)>;
    static WARNED: OnceLock<Mutex<Seen>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((Arc::clone(&path.name), phase.name()));
    if first {
        let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
        log::warn!(
            "{} called in the {} phase; Kong allows it only in: {} (Kong will raise and abandon the event)",
            path.name,
            phase.name(),
            if names.is_empty() { "no phase of an external plugin".to_string() } else { names.join(", ") }
        );
    }
}

const RUNNING: u8 = 0;
const EXITED: u8 = 1;
const ABANDONED: u8 = 2;
const FINISHED: u8 = 3;

/// How a handler waits for Kong's answer to a PDK call.
pub enum Waiter {
    /// Thread model: the handler's OS thread blocks, detached from Python.
    Block,
    /// A Python event loop (asyncio, gevent) runs the handler: the call
    /// returns an awaitable that the loop completes when the answer arrives.
    Loop(Arc<dyn LoopWait>),
}

/// How a loop-run event waits for Kong's answers; implemented by the
/// executor that runs it (executor/bridge.rs), so that this proxy knows no
/// waiting strategy of its own.
pub trait LoopWait: Send + Sync {
    /// The awaitable of a call whose answer arrives on `answered`.
    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        ctx: Arc<EventCtx>,
        answered: oneshot::Receiver<Resume>,
    ) -> PyResult<Bound<'py, PyAny>>;

    /// An awaitable that raises `err` where it is awaited.
    fn failed<'py>(&self, py: Python<'py>, err: PyErr) -> PyResult<Bound<'py, PyAny>>;
}

/// Per-event state shared by the `kong` objects of one event.
pub struct EventCtx {
    pub event_id: u64,
    pub phase: Phase,
    link: EventLink,
    lua_style: bool,
    state: AtomicU8,
    waiter: Waiter,
}

impl Drop for EventCtx {
    /// A handler that vanished without ending its event (its thread died, the
    /// interpreter is exiting) still answers Kong.
    fn drop(&mut self) {
        self.finish();
    }
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
    pub fn new(phase: Phase, link: EventLink, lua_style: bool, waiter: Waiter) -> Self {
        EventCtx {
            event_id: link.event_id,
            phase,
            link,
            lua_style,
            state: AtomicU8::new(RUNNING),
            waiter,
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
            let _ = self.link.done();
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
        self.link.terminal(&method, &args).is_ok()
    }

    /// Hands one PDK call to the event's channel; the answer comes on the
    /// returned receiver.
    fn send_call(
        &self,
        py: Python<'_>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<oneshot::Receiver<Resume>> {
        if !self.is_running() {
            return Err(self.ended_error(py));
        }
        self.link
            .call(&method, &args)
            .map_err(|e| self.link_error(py, &method, e))
    }

    /// The Python error for an output that could not be sent.
    fn link_error(&self, py: Python<'_>, method: &str, e: LinkError) -> PyErr {
        match e {
            LinkError::Busy if self.is_running() => PyRuntimeError::new_err(format!(
                "{method}: another PDK call of this event is already waiting for Kong; \
                 Kong answers one call of an event at a time, so calls from \
                 threads or tasks of one handler must not overlap (await each call)"
            )),
            _ => self.abandoned(py),
        }
    }

    /// Takes the RPC in flight away from the handler when it has held it
    /// for at least `held_for` (the watchdog), or at once (`ZERO`: a handler
    /// that raised): a link for whoever answers Kong in its place
    /// (`executor/fail_closed.rs`). The handler's later calls raise
    /// `EventAbandoned` and its return sends nothing.
    pub fn take_over(&self, held_for: std::time::Duration) -> Option<EventLink> {
        let link = self.link.take_stuck(held_for)?;
        self.state.store(ABANDONED, Ordering::Release);
        Some(link)
    }

    /// The registry dropped our pending answer: deadline or shutdown.
    fn abandoned(&self, py: Python<'_>) -> PyErr {
        let _ =
            self.state
                .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
        self.ended_error(py)
    }

    /// Kong's answer as the plugin sees it: `(value, err)` in lua style, the
    /// value or a raised `PDKException` in python style. `None`: no answer
    /// will come (the event was abandoned).
    pub fn answer_to_py<'py>(
        &self,
        py: Python<'py>,
        resume: Option<Resume>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match resume.map(|r| self.link.resume(r)) {
            None => Err(self.abandoned(py)),
            Some(answer) => answer_to_py(py, answer, self.lua_style),
        }
    }

    /// One PDK call as the plugin makes it, in whichever way the event waits.
    fn make_call<'py>(
        self: &Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match &self.waiter {
            Waiter::Block => {
                if !self.is_running() {
                    return Err(self.ended_error(py));
                }
                match py.detach(|| self.link.call_blocking(&method, &args)) {
                    Ok(resume) => self.answer_to_py(py, Some(resume)),
                    Err(e) => Err(self.link_error(py, &method, e)),
                }
            }
            Waiter::Loop(wait) => match self.send_call(py, method, args) {
                Ok(answered) => wait.awaitable(py, Arc::clone(self), answered),
                // A failed awaitable, not a raise at call time: a handler
                // that gathers two calls gets the error where it awaits, and
                // still awaits the call that went out.
                Err(e) => wait.failed(py, e),
            },
        }
    }
}

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

/// The event behind a `kong` object: what the proxy needs from whichever
/// execution path runs the handler ([`EventCtx`] for threads and the bridged
/// loop, `looped::LoopedEvent` when the loop owns the socket).
pub trait PdkTarget: Send + Sync {
    fn event_id(&self) -> u64;
    fn phase(&self) -> Phase;
    fn is_running(&self) -> bool;
    fn is_abandoned(&self) -> bool;
    /// The error a call on an event that has ended raises.
    fn ended_error(&self, py: Python<'_>) -> PyErr;
    /// Sends a terminal call and ends the event; `Err` when it cannot.
    fn terminal(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<()>;
    /// One PDK call: Kong's answer, or an awaitable of it.
    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

impl PdkTarget for EventCtx {
    fn event_id(&self) -> u64 {
        self.event_id
    }
    fn phase(&self) -> Phase {
        self.phase
    }
    fn is_running(&self) -> bool {
        EventCtx::is_running(self)
    }
    fn is_abandoned(&self) -> bool {
        EventCtx::is_abandoned(self)
    }
    fn ended_error(&self, py: Python<'_>) -> PyErr {
        EventCtx::ended_error(self, py)
    }
    fn terminal(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<()> {
        if EventCtx::terminal(self, method, args) {
            Ok(())
        } else {
            Err(EventCtx::ended_error(self, py))
        }
    }
    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.make_call(py, method, args)
    }
}

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
