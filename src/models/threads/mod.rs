//! The thread model (default): each event's handler runs on a pool thread.
//!
//! The pool (`pool.rs`) starts threads on demand up to `--max-handler-threads`
//! and keeps them a while when idle, so a burst of 64 events waiting on Kong
//! gets 64 threads and no event waits for another (no global lock while a
//! handler runs). Each thread attaches to Python for the handler and detaches
//! inside every PDK call.
//!
//! The thread that runs a handler also reads the connection the event came
//! on: it takes its own Steps off it (`events/lent.rs`), and after the
//! handler returned it reads the next HandleEvent there and runs it itself
//! (`linger.rs`), so an event on a busy connection involves no other thread.
//!
//! Two things keep a stuck plugin from stalling Kong: an event that no thread
//! can take is failed closed at once instead of queueing, and with
//! `--handler-timeout` a watchdog fails closed every event whose handler has
//! held Kong's request too long (the thread may stay stuck; the event ends).

mod linger;
mod pool;
pub mod watchdog;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use rmpv::Value;

use crate::events::Lend;
use crate::executor::plugins::PluginClasses;
use crate::executor::{report, EventJob, Executor, PluginHandle, Running, RunsEvents};
use crate::pdk::{EventCtx, PdkProxy, Waiter};
use crate::phase::Phase;
use crate::writer::ConnWriter;
use linger::Found;
use pool::{promise_idle, Pool};
use watchdog::{fail_link_closed, watchdog, Watched};

pub struct ThreadExecutor {
    handlers: Handlers,
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
            runtime.spawn(watchdog(Arc::downgrade(&watched), limit, fail_link_closed));
            watched
        });
        ThreadExecutor {
            handlers: Handlers {
                pool: Pool::new(max_threads, Duration::from_secs(30)),
                plugins,
                running: Arc::new(AtomicUsize::new(0)),
                watched,
            },
        }
    }
}

impl RunsEvents for ThreadExecutor {
    fn run_event(&self, job: EventJob) {
        self.handlers.submit(job);
    }

    /// A HandleEvent read by a lingering handler thread runs on it.
    fn runs_on_caller(&self, _job: &EventJob) -> bool {
        true
    }
}

impl Executor for ThreadExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.handlers.plugins.attach_and_create(plugin, config)
    }

    fn running(&self) -> usize {
        self.handlers.running.load(Ordering::Acquire)
    }
}

/// What a pool thread needs to run handlers.
#[derive(Clone)]
struct Handlers {
    pool: Pool,
    plugins: Arc<PluginClasses>,
    running: Arc<AtomicUsize>,
    watched: Option<Arc<Watched>>,
}

impl Handlers {
    /// Runs an event on a pool thread, or fails it closed at once when no
    /// thread is free.
    fn submit(&self, job: EventJob) {
        let running = Running::new(&self.running);
        let this = self.clone();
        let sent = self
            .pool
            .execute((job, running), move |first| this.run_from(first));
        if let Err(((job, running), exhausted)) = sent {
            let message = format!(
                "{} handler not run: no handler thread free (all {} busy; --max-handler-threads)",
                job.link.label, exhausted.max_threads
            );
            log::error!("event {}: {message}", job.link.event_id);
            job.link.fail_closed(job.phase, &message);
            drop(running);
        }
    }

    /// Runs an event's handler, then the events that come on the connection
    /// it answered on, for as long as they come (`linger.rs`).
    fn run_from(self, first: (EventJob, Running)) {
        let mut next = Some(first);
        while let Some((job, running)) = next.take() {
            let lua_style = self.plugins.lua_style(&job.instance.instance().name);
            let kept =
                Python::try_attach(|py| run_handler(py, job, lua_style, self.watched.as_ref()));
            drop(running);
            let found = match kept {
                Some(Some((writer, lend))) => linger::linger(&self.pool, writer, lend),
                Some(None) => None,
                None => {
                    log::warn!("event dropped: the Python interpreter is shutting down");
                    None
                }
            };
            match found {
                Some(Found::Here(job)) => next = Some((job, Running::new(&self.running))),
                // The pool had no room for this thread to leave it: another
                // thread runs the event.
                Some(Found::Elsewhere(job)) => self.submit(job),
                None => {}
            }
        }
    }
}

/// Runs one event's handler; returns the connection that carried `"ret"`
/// when this thread may go on reading it.
fn run_handler(
    py: Python<'_>,
    job: EventJob,
    lua_style: bool,
    watched: Option<&Arc<Watched>>,
) -> Option<(Arc<ConnWriter>, Lend)> {
    let EventJob {
        phase,
        instance,
        link,
    } = job;
    link.keep_connection();
    let ctx = Arc::new(EventCtx::new(phase, link, lua_style, Waiter::Block));
    if let Some(w) = watched {
        w.watch(&ctx, phase);
    }
    let result = Bound::new(py, PdkProxy::root(Arc::clone(&ctx))).and_then(|kong| {
        instance
            .instance()
            .handle
            .object(py)?
            .call_method1(phase.name(), (kong,))
    });
    if let Some(w) = watched {
        w.unwatch(ctx.event_id);
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
    ctx.take_connection()
}

/// A handler raised. Like a Lua plugin that errors: the traceback goes to our
/// stderr, and the event fails closed (`fail_closed.rs`: the text to Kong's
/// error log through `kong.log.err`, then a 500 where Kong can still
/// respond, on that log's Step): this thread is free at once.
fn on_exception(py: Python<'_>, ctx: &EventCtx, phase: Phase, plugin: &str, err: &PyErr) {
    let message = report(py, ctx, phase, plugin, err);
    promise_idle();
    match message.and_then(|m| ctx.take_over(Duration::ZERO).map(|link| (link, m))) {
        Some((link, message)) => link.fail_closed(phase, &message),
        None => ctx.finish(),
    }
}
