//! How a phase handler runs.
//!
//! The RPC side (`service.rs`) knows nothing of Python: it asks an
//! [`Executor`] to create a plugin object for a config and to run one event,
//! handing it the event's [`EventLink`], through which the handler's side
//! answers Kong. Each execution model (`models/`) is one implementation of
//! this seam; the PDK proxy (`pdk/`) and the event protocol (`events/`) are
//! shared by all.
//!
//! The GIL rule: an executor holds the GIL only while Python code runs. A PDK
//! call waits for Kong detached (see `pdk/event.rs`).
//!
//! Every event ends in exactly one of: "ret", a terminal call, or abandonment
//! (no Step from Kong in time). An event context dropped without an ending
//! answers "ret" (`pdk::EventCtx`), so even a crashed handler cannot leave Kong
//! waiting.

pub mod plugins;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use rmpv::Value;

use crate::convert::value_to_py;
use crate::events::EventLink;
use crate::instances::InFlight;
use crate::pdk::{event_abandoned_type, plugin_exit_type, EventCtx, PdkTarget};
use crate::phase::Phase;

/// What an executor keeps for one instance.
pub enum PluginHandle {
    /// The live plugin object, in this process.
    Python(Py<PyAny>),
    /// A key into the executor's own table (instances that live elsewhere,
    /// e.g. in worker processes).
    Remote(RemoteKey),
}

/// The key of an instance that lives outside this process. The executor
/// learns through `release` when the registry's last reference is gone
/// (closed or expired, and no event in flight), so that it can close the
/// instance where it lives: Kong never closes orphans (docs/protocol.md §7.3).
pub struct RemoteKey {
    pub key: u64,
    release: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl RemoteKey {
    pub fn new(key: u64, release: impl FnOnce(u64) + Send + Sync + 'static) -> Self {
        RemoteKey {
            key,
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for RemoteKey {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.key);
        }
    }
}

impl PluginHandle {
    /// The plugin object of an in-process instance.
    pub fn object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            PluginHandle::Python(obj) => Ok(obj.bind(py).clone()),
            PluginHandle::Remote(_) => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this instance lives in another process",
            )),
        }
    }
}

/// One event to run.
pub struct EventJob {
    pub phase: Phase,
    /// Keeps the instance alive and marked busy until the handler returns.
    pub instance: InFlight<PluginHandle>,
    /// Where the handler's outputs go (they answer Kong's RPCs).
    pub link: EventLink,
}

/// What runs the plugins' code: creates their objects, and counts and
/// stops what runs.
pub trait Executor: Send + Sync {
    /// Creates the object of the plugin `plugin` for one config. Blocking:
    /// the caller runs it off the async threads.
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String>;

    /// Handlers currently running (for status and draining).
    fn running(&self) -> usize;

    /// Events waiting for Kong that the executor keeps itself, outside the
    /// service's registry (the looped model).
    fn waiting(&self) -> usize {
        0
    }

    /// Stops what the executor runs outside this process (worker
    /// processes). Blocking; called once the events have drained.
    fn stop(&self) {}

    /// Extra entries for the `plugin.GetStatus` result.
    fn status(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }
}

pub type SharedExecutor = Arc<dyn Executor>;

/// An executor that the service hands each new event to (every model but
/// the looped one, whose loop starts its events itself).
pub trait RunsEvents: Executor {
    /// Starts one event; its handler answers Kong through `job.link`.
    fn run_event(&self, job: EventJob);

    /// Whether a handler's thread that read this event's HandleEvent on its
    /// lent connection may run the event itself instead of `run_event`
    /// (the thread model, `models/threads/linger.rs`).
    fn runs_on_caller(&self, _job: &EventJob) -> bool {
        false
    }
}

pub type SharedRunner = Arc<dyn RunsEvents>;

/// Creates the plugin object for one config: `Plugin(config)`.
pub fn new_instance(
    py: Python<'_>,
    class: &Py<PyAny>,
    config: &Value,
) -> Result<PluginHandle, String> {
    let config = value_to_py(py, config).map_err(|e| describe(py, &e))?;
    class
        .bind(py)
        .call1((config,))
        .map(|obj| PluginHandle::Python(obj.unbind()))
        .map_err(|e| {
            log_traceback(py, &e, "the plugin's constructor");
            describe(py, &e)
        })
}

/// Sends each phase to the executor that runs it: `async def` phases to an
/// asyncio loop, the rest to the default (threads or gevent).
pub struct PhaseRouter {
    pub default: SharedRunner,
    /// The loop's executor and, by plugin name, the phases it runs.
    pub looped: Option<(SharedRunner, HashMap<String, Vec<Phase>>)>,
}

impl RunsEvents for PhaseRouter {
    fn run_event(&self, job: EventJob) {
        match &self.looped {
            Some((exec, _)) if self.is_looped(&job) => exec.run_event(job),
            _ => self.default.run_event(job),
        }
    }

    fn runs_on_caller(&self, job: &EventJob) -> bool {
        !self.is_looped(job) && self.default.runs_on_caller(job)
    }
}

impl Executor for PhaseRouter {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.default.start_instance(plugin, config)
    }

    fn running(&self) -> usize {
        self.default.running() + self.looped.as_ref().map_or(0, |(e, _)| e.running())
    }

    fn stop(&self) {
        self.default.stop();
        if let Some((e, _)) = &self.looped {
            e.stop();
        }
    }

    fn status(&self) -> Vec<(&'static str, Value)> {
        self.default.status()
    }
}

impl PhaseRouter {
    /// Whether the event's phase runs on the event loop.
    fn is_looped(&self, job: &EventJob) -> bool {
        self.looped.as_ref().is_some_and(|(_, phases)| {
            phases
                .get(&job.instance.instance().name)
                .is_some_and(|p| p.contains(&job.phase))
        })
    }
}

/// Counts a running handler for as long as it lives.
pub struct Running(Arc<AtomicUsize>);

impl Running {
    pub fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Running(Arc::clone(counter))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Classifies an exception that ended a handler and logs it. Returns the
/// text for Kong's error log when the event can still report it; `None` for
/// the unwinding of `kong.response.exit` and for abandoned events.
pub fn report(
    py: Python<'_>,
    ctx: &EventCtx,
    phase: Phase,
    plugin: &str,
    err: &PyErr,
) -> Option<String> {
    report_for(py, ctx, phase, plugin, err)
}

/// [`report`] for any event behind a `kong` object.
pub fn report_for(
    py: Python<'_>,
    ctx: &dyn PdkTarget,
    phase: Phase,
    plugin: &str,
    err: &PyErr,
) -> Option<String> {
    if plugin_exit_type(py).is_ok_and(|t| err.is_instance(py, t.as_any())) {
        return None;
    }
    let text = describe(py, err);
    if ctx.is_abandoned() || event_abandoned_type(py).is_ok_and(|t| err.is_instance(py, t.as_any()))
    {
        log::warn!(
            "event {}: {plugin} {} handler stopped after Kong abandoned the event: {text}",
            ctx.event_id(),
            phase.name()
        );
        return None;
    }
    log_traceback(
        py,
        err,
        &format!(
            "event {}: {plugin} {} handler",
            ctx.event_id(),
            phase.name()
        ),
    );
    ctx.is_running()
        .then(|| format!("{plugin} {} handler raised {text}", phase.name()))
}

/// `TypeName: message`, with fallbacks when `str()` itself fails.
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    let ty = err
        .get_type(py)
        .qualname()
        .map_or_else(|_| "Exception".to_string(), |n| n.to_string());
    match err.value(py).str() {
        Ok(s) if !s.to_string_lossy().is_empty() => format!("{ty}: {}", s.to_string_lossy()),
        _ => ty,
    }
}

/// Logs a Python exception with its traceback on one log record.
pub fn log_traceback(py: Python<'_>, err: &PyErr, what: &str) {
    let formatted = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat());
    match formatted {
        Ok(tb) => log::error!("{what} raised {}\n{}", describe(py, err), tb.trim_end()),
        Err(_) => log::error!("{what} raised {}", describe(py, err)),
    }
}
