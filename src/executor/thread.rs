//! The thread model (default): each event's handler runs on a pool thread.
//!
//! The pool (`pool.rs`) starts threads on demand up to `--max-handler-threads`
//! and keeps them a while when idle, so a burst of 64 events waiting on Kong
//! gets 64 threads and no event waits for another (no global lock while a
//! handler runs). Each thread attaches to Python for the handler and detaches
//! inside every PDK call.
//!
//! Two things keep a stuck plugin from stalling Kong: an event that no thread
//! can take is failed closed at once instead of queueing, and with
//! `--handler-timeout` a watchdog fails closed every event whose handler has
//! held Kong's request too long (the thread may stay stuck; the event ends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use rmpv::Value;

use super::fail_closed::fail_closed;
use super::plugins::PluginClasses;
use super::pool::{promise_idle, Pool};
use super::{report, Running};
use super::{EventJob, Executor, PluginHandle};
use crate::convert::{write_py, Unsendable};
use crate::events::EventLink;
use crate::pdk::{EventCtx, PdkPath, PdkProxy, Waiter};
use crate::phase::Phase;

/// The events whose handlers run now, for the watchdog.
type Watched = Mutex<HashMap<u64, (Weak<EventCtx>, Phase)>>;

pub struct ThreadExecutor {
    pool: Pool,
    plugins: Arc<PluginClasses>,
    running: Arc<AtomicUsize>,
    runtime: tokio::runtime::Handle,
    /// Present when `--handler-timeout` is set.
    watched: Option<Arc<Watched>>,
}

impl ThreadExecutor {
    pub fn new(
        plugins: Arc<PluginClasses>,
        max_threads: usize,
        handler_timeout: Option<Duration>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let watched = handler_timeout.map(|limit| {
            let watched: Arc<Watched> = Arc::default();
            runtime.spawn(watchdog(Arc::downgrade(&watched), limit, runtime.clone()));
            watched
        });
        ThreadExecutor {
            pool: Pool::new(max_threads, Duration::from_secs(30)),
            plugins,
            running: Arc::new(AtomicUsize::new(0)),
            runtime,
            watched,
        }
    }
}

impl Executor for ThreadExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.plugins.attach_and_create(plugin, config)
    }

    fn run_event(&self, job: EventJob) {
        let running = Running::new(&self.running);
        let lua_style = self.plugins.lua_style(&job.instance.instance().name);
        let watched = self.watched.clone();
        let sent = self.pool.execute((job, running), move |(job, _running)| {
            let attached = Python::try_attach(|py| run_handler(py, job, lua_style, watched));
            if attached.is_none() {
                log::warn!("event dropped: the Python interpreter is shutting down");
            }
        });
        if let Err(((job, running), exhausted)) = sent {
            let message = format!(
                "{} handler not run: no handler thread free (all {} busy; --max-handler-threads)",
                job.link.label, exhausted.max_threads
            );
            log::error!("event {}: {message}", job.link.event_id);
            self.runtime.spawn(async move {
                let _running = running;
                fail_closed(&job.link, job.phase, &message).await;
            });
        }
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

fn run_handler(py: Python<'_>, job: EventJob, lua_style: bool, watched: Option<Arc<Watched>>) {
    let EventJob {
        phase,
        instance,
        link,
    } = job;
    let ctx = Arc::new(EventCtx::new(phase, link, lua_style, Waiter::Block));
    if let Some(w) = &watched {
        lock(w).insert(ctx.event_id, (Arc::downgrade(&ctx), phase));
    }
    let result = Bound::new(py, PdkProxy::root(Arc::clone(&ctx))).and_then(|kong| {
        instance
            .instance()
            .handle
            .object(py)?
            .call_method1(phase.name(), (kong,))
    });
    if let Some(w) = &watched {
        lock(w).remove(&ctx.event_id);
    }
    match result {
        Ok(_) => {
            // The handler's code is over, and Kong's next HandleEvent may
            // come as soon as it reads "ret": this thread can take it.
            promise_idle();
            ctx.finish();
        }
        Err(e) => on_exception(py, &ctx, phase, &instance.instance().name, &e),
    }
    // The plugin's code is over (also after kong.response.exit, whose
    // `finally:` blocks have run by now): the thread can take the next event.
    promise_idle();
    drop(instance);
}

/// A handler raised. Like a Lua plugin that errors: the traceback goes to our
/// stderr, the text to Kong's error log through `kong.log.err`, and where
/// Kong can still respond the request fails closed with a 500.
fn on_exception(py: Python<'_>, ctx: &EventCtx, phase: Phase, plugin: &str, err: &PyErr) {
    let Some(message) = report(py, ctx, phase, plugin, err) else {
        promise_idle();
        ctx.finish();
        return;
    };
    if let Ok(args) = encode(py, message) {
        // The answer does not matter; a failure here means the event is gone.
        let _ = ctx.call(py, PdkPath::resolve("kong.log.err").name.clone(), args);
    }
    if phase.can_respond() && ctx.is_running() {
        if let Ok(args) = encode(py, 500) {
            promise_idle();
            ctx.terminal(PdkPath::resolve("kong.response.error").name.clone(), args);
            return;
        }
    }
    promise_idle();
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

fn lock(watched: &Watched) -> std::sync::MutexGuard<'_, HashMap<u64, (Weak<EventCtx>, Phase)>> {
    watched.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails closed every event whose handler has held Kong's request for
/// `limit`; ends with the executor.
async fn watchdog(watched: Weak<Watched>, limit: Duration, runtime: tokio::runtime::Handle) {
    let period = (limit / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let stuck: Vec<(EventLink, Phase)> = lock(&watched)
            .values()
            .filter_map(|(ctx, phase)| {
                let ctx = ctx.upgrade()?;
                ctx.take_stuck(limit).map(|link| (link, *phase))
            })
            .collect();
        for (link, phase) in stuck {
            let message = format!(
                "{} handler timed out: it ran {:.1} s without answering Kong (--handler-timeout)",
                link.label,
                limit.as_secs_f64()
            );
            log::error!("event {}: {message}", link.event_id);
            runtime.spawn(async move { fail_closed(&link, phase, &message).await });
        }
    }
}
