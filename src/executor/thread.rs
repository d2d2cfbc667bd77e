//! The thread model (default): each event's handler runs on a pool thread.
//!
//! The pool is tokio's blocking pool: threads are created on demand up to a
//! limit and kept for a while when idle, so a burst of 64 events waiting on
//! Kong gets 64 threads and no event waits for another (docs/architecture.md, "Design rules": no global
//! lock while a handler runs). Each thread attaches to Python for the handler
//! and detaches inside every PDK call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use rmpv::Value;

use super::pool::Pool;
use super::{new_instance, report, Running};
use super::{EventJob, Executor, Phase, PluginHandle};
use crate::convert::{write_py, Unsendable};
use crate::pdk::{EventCtx, PdkPath, PdkProxy, Waiter};

pub struct ThreadExecutor {
    pool: Pool,
    plugin_class: Py<PyAny>,
    lua_style: bool,
    running: Arc<AtomicUsize>,
}

impl ThreadExecutor {
    pub fn new(plugin_class: Py<PyAny>, lua_style: bool, max_threads: usize) -> Self {
        ThreadExecutor {
            pool: Pool::new(max_threads, Duration::from_secs(30)),
            plugin_class,
            lua_style,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Executor for ThreadExecutor {
    fn start_instance(&self, config: &Value) -> Result<PluginHandle, String> {
        Python::try_attach(|py| new_instance(py, &self.plugin_class, config))
            .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
    }

    fn run_event(&self, job: EventJob) {
        let running = Running::new(&self.running);
        let lua_style = self.lua_style;
        self.pool.execute(move || {
            let _running = running;
            let attached = Python::try_attach(|py| run_handler(py, job, lua_style));
            if attached.is_none() {
                log::warn!("event dropped: the Python interpreter is shutting down");
            }
        });
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

fn run_handler(py: Python<'_>, job: EventJob, lua_style: bool) {
    let EventJob {
        phase,
        instance,
        link,
    } = job;
    let ctx = Arc::new(EventCtx::new(phase, link, lua_style, Waiter::Block));
    let result = Bound::new(py, PdkProxy::root(Arc::clone(&ctx))).and_then(|kong| {
        instance
            .instance()
            .handle
            .object(py)?
            .call_method1(phase.name(), (kong,))
    });
    match result {
        Ok(_) => ctx.finish(),
        Err(e) => on_exception(py, &ctx, phase, &instance.instance().name, &e),
    }
    drop(instance);
}

/// A handler raised. Like a Lua plugin that errors: the traceback goes to our
/// stderr, the text to Kong's error log through `kong.log.err`, and where
/// Kong can still respond the request fails closed with a 500.
fn on_exception(py: Python<'_>, ctx: &EventCtx, phase: Phase, plugin: &str, err: &PyErr) {
    let Some(message) = report(py, ctx, phase, plugin, err) else {
        ctx.finish();
        return;
    };
    if let Ok(args) = encode(py, message) {
        // The answer does not matter; a failure here means the event is gone.
        let _ = ctx.call(py, PdkPath::resolve("kong.log.err").name.clone(), args);
    }
    if phase.can_respond() && ctx.is_running() {
        if let Ok(args) = encode(py, 500) {
            ctx.terminal(PdkPath::resolve("kong.response.error").name.clone(), args);
            return;
        }
    }
    ctx.finish();
}

/// Encodes a one-argument call's argument list.
fn encode<'py, T: IntoPyObject<'py>>(py: Python<'py>, arg: T) -> PyResult<Vec<u8>> {
    let arg = arg.into_bound_py_any(py)?;
    let mut out = Vec::new();
    let _ = rmp::encode::write_array_len(&mut out, 1);
    write_py(&mut out, &arg, Unsendable::Stringify)?;
    Ok(out)
}
