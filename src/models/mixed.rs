//! Running the `async def` phases of a plugin that also has plain `def`
//! phases on an asyncio loop, while the socket stays with the tokio I/O
//! threads (the sync phases run on the thread pool). A plugin whose phases
//! all run on a loop (all `async def`, or `-g`) does not come here: its loop
//! owns the socket (`models/looped/`), with no hand-off per PDK call.
//!
//! Tokio threads never take the GIL for these events. Everything the loop must
//! do (start an event, resolve a PDK call's token) is a [`Delivery`] pushed on
//! a queue, and the loop is woken through a socket pair that it watches
//! (asyncio `add_reader`). The loop thread then drains the queue while holding
//! the GIL it already has. The Python side is the asyncio runner
//! (`kong_pdk/runners.py`): `attach(bridge)`, `start(plugin, phase, kong,
//! handle)`, `new_token()`, `wait(token)` and `resolve(token, value, error)`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use rmpv::Value;
use tokio::sync::oneshot;

use crate::events::Resume;
use crate::executor::plugins::PluginClasses;
use crate::executor::{report, EventJob, Executor, PluginHandle, Running, RunsEvents};
use crate::instances::InFlight;
use crate::pdk::{EventCtx, LoopWait, PdkProxy, Waiter};
use crate::phase::Phase;

pub enum Delivery {
    Start(EventJob, Running),
    Answer {
        ctx: Arc<EventCtx>,
        token: Py<PyAny>,
        /// `None`: the event was dropped before Kong answered.
        answer: Option<Resume>,
    },
}

/// The thread-safe half: a queue and a wake-up byte.
pub struct BridgeCore {
    queue: Mutex<Vec<Delivery>>,
    writer: UnixStream,
    signaled: AtomicBool,
}

impl BridgeCore {
    pub fn push(&self, item: Delivery) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
        // One byte per batch: the loop drains everything queued when it wakes.
        if !self.signaled.swap(true, Ordering::AcqRel) {
            let _ = (&self.writer).write(&[1]);
        }
    }
}

/// What a loop-run event needs to wait for answers.
pub struct LoopLink {
    bridge: Arc<BridgeCore>,
    /// The Python runner: `new_token()`, `wait(token)`, `resolve(...)`.
    runner: Py<PyAny>,
    runtime: tokio::runtime::Handle,
}

impl LoopWait for LoopLink {
    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        ctx: Arc<EventCtx>,
        answered: oneshot::Receiver<Resume>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let runner = self.runner.bind(py);
        let token = runner.call_method0(intern!(py, "new_token"))?;
        let bridge = Arc::clone(&self.bridge);
        let pending = token.clone().unbind();
        // The answer crosses to the loop's thread through the bridge.
        self.runtime.spawn(async move {
            let answer = answered.await.ok();
            bridge.push(Delivery::Answer {
                ctx,
                token: pending,
                answer,
            });
        });
        runner.call_method1(intern!(py, "wait"), (token,))
    }

    fn failed<'py>(&self, py: Python<'py>, err: PyErr) -> PyResult<Bound<'py, PyAny>> {
        let runner = self.runner.bind(py);
        let token = runner.call_method0(intern!(py, "new_token"))?;
        let error = err.into_value(py).into_bound(py).into_any();
        runner.call_method1(intern!(py, "resolve"), (token.clone(), py.None(), error))?;
        runner.call_method1(intern!(py, "wait"), (token,))
    }
}

/// The loop's half, handed to the Python runner.
#[pyclass(frozen, module = "kong_pdk._core")]
pub struct LoopBridge {
    core: Arc<BridgeCore>,
    reader: UnixStream,
    link: Arc<LoopLink>,
    plugins: Arc<PluginClasses>,
}

#[pymethods]
impl LoopBridge {
    /// The descriptor the loop watches for readability.
    fn fileno(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// Runs everything queued; called by the loop when `fileno()` is readable.
    fn drain(&self, py: Python<'_>) {
        // Order matters: empty the socket, then clear the flag, then take the
        // queue. A push after the flag is cleared writes a new byte, so no item
        // can sit in the queue without a byte to wake the loop for it.
        let mut sink = [0u8; 256];
        while matches!((&self.reader).read(&mut sink), Ok(n) if n > 0) {}
        self.core.signaled.store(false, Ordering::Release);
        let items = std::mem::take(&mut *self.core.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for item in items {
            if let Err(e) = self.deliver(py, item) {
                log::error!("event loop bridge: {}", crate::executor::describe(py, &e));
            }
        }
    }
}

impl LoopBridge {
    fn deliver(&self, py: Python<'_>, item: Delivery) -> PyResult<()> {
        let runner = self.link.runner.bind(py);
        match item {
            Delivery::Answer { ctx, token, answer } => {
                let (value, error) = match ctx.answer_to_py(py, answer) {
                    Ok(v) => (v, py.None().into_bound(py)),
                    Err(e) => (
                        py.None().into_bound(py),
                        e.into_value(py).into_bound(py).into_any(),
                    ),
                };
                runner.call_method1("resolve", (token, value, error))?;
            }
            Delivery::Start(job, running) => self.start(py, job, running)?,
        }
        Ok(())
    }

    fn start(&self, py: Python<'_>, job: EventJob, running: Running) -> PyResult<()> {
        let EventJob {
            phase,
            instance,
            link,
        } = job;
        let event_id = link.event_id;
        let plugin_name = instance.instance().name.clone();
        let ctx = Arc::new(EventCtx::new(
            phase,
            link,
            self.plugins.lua_style(&plugin_name),
            Waiter::Loop(Arc::clone(&self.link) as Arc<dyn LoopWait>),
        ));
        let plugin = instance.instance().handle.object(py)?;
        let handle = Bound::new(
            py,
            EventHandle {
                ctx: Arc::clone(&ctx),
                phase,
                plugin_name,
                alive: Mutex::new(Some((instance, running))),
            },
        )?;
        let kong = Bound::new(py, PdkProxy::root(Arc::clone(&ctx)))?;
        let started = self.link.runner.bind(py).call_method1(
            "start",
            (
                plugin,
                PyString::new(py, phase.name()),
                kong,
                handle.clone(),
            ),
        );
        if let Err(e) = started {
            // The runner itself failed: end the event so Kong gets an answer.
            log::error!(
                "event {event_id}: could not start the handler: {}",
                crate::executor::describe(py, &e)
            );
            handle.get().finish();
        }
        Ok(())
    }
}

/// The handler's view of its event, for the runner's driver code.
#[pyclass(frozen, module = "kong_pdk._core")]
pub struct EventHandle {
    ctx: Arc<EventCtx>,
    phase: Phase,
    plugin_name: String,
    alive: Mutex<Option<(InFlight<PluginHandle>, Running)>>,
}

#[pymethods]
impl EventHandle {
    /// The handler is done: Kong gets "ret" unless the event already ended.
    fn finish(&self) {
        self.ctx.finish();
        drop(self.alive.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// The handler raised `exc`: logs it, and unless it was the unwinding of
    /// `kong.response.exit` or of an abandoned event, fails the event closed
    /// (`fail_closed.rs`); otherwise as `finish`.
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        let err = PyErr::from_value(exc);
        let message = report(py, &self.ctx, self.phase, &self.plugin_name, &err);
        match message.and_then(|m| self.ctx.take_over(Duration::ZERO).map(|link| (link, m))) {
            Some((link, message)) => {
                link.fail_closed(self.phase, &message);
                drop(self.alive.lock().unwrap_or_else(|p| p.into_inner()).take());
            }
            None => self.finish(),
        }
    }
}

/// An executor whose handlers run on a Python event loop.
pub struct LoopExecutor {
    core: Arc<BridgeCore>,
    plugins: Arc<PluginClasses>,
    running: Arc<AtomicUsize>,
}

impl LoopExecutor {
    /// Creates the executor and attaches its bridge to the Python runner.
    pub fn attach(
        py: Python<'_>,
        runner: Py<PyAny>,
        plugins: Arc<PluginClasses>,
        runtime: tokio::runtime::Handle,
    ) -> PyResult<LoopExecutor> {
        let (reader, writer) =
            UnixStream::pair().map_err(|e| PyOSError::new_err(format!("socketpair: {e}")))?;
        reader
            .set_nonblocking(true)
            .and_then(|_| writer.set_nonblocking(true))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let core = Arc::new(BridgeCore {
            queue: Mutex::new(Vec::new()),
            writer,
            signaled: AtomicBool::new(false),
        });
        let bridge = LoopBridge {
            core: Arc::clone(&core),
            reader,
            link: Arc::new(LoopLink {
                bridge: Arc::clone(&core),
                runner: runner.clone_ref(py),
                runtime,
            }),
            plugins: Arc::clone(&plugins),
        };
        runner
            .bind(py)
            .call_method1("attach", (Bound::new(py, bridge)?,))?;
        Ok(LoopExecutor {
            core,
            plugins,
            running: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl RunsEvents for LoopExecutor {
    fn run_event(&self, job: EventJob) {
        let running = Running::new(&self.running);
        self.core.push(Delivery::Start(job, running));
    }
}

impl Executor for LoopExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.plugins.attach_and_create(plugin, config)
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}
