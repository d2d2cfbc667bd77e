//! The server process: runtime, listener, background reaper, shutdown.
//!
//! `socket_file.rs` binds the socket and knows whether the path is still
//! ours, `tasks.rs` holds the runtime's accept loop and reaper, `logging.rs`
//! the core's logger.
//!
//! Python owns the main thread and the signals (docs/architecture.md, "Signals and shutdown"): `cli.py` builds a
//! [`PluginServer`], calls `start()`, waits on its own, and calls `shutdown()`
//! on SIGTERM/SIGINT or when the parent Kong worker is gone. The shutdown order:
//! refuse new instances and events, let the events in flight finish (their
//! Steps may still arrive, also on new connections, so the listener stays open
//! while draining), then drop whatever is left (their handlers are woken with
//! `EventAbandoned`), stop the listener and connections, remove the socket.

mod logging;
mod socket_file;
mod tasks;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::net::UnixListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

pub use logging::init_logging;
use socket_file::{bind, check_free, probe, BindError, BoundSocket, FileId, Holder};
use tasks::{accept_loop, reaper};

use crate::convert::value_to_py;
use crate::defaults;
use crate::dispatch::Dispatcher;
use crate::executor::plugins::PluginClasses;
use crate::executor::{Executor, PhaseRouter, SharedExecutor, SharedRunner};
use crate::instances::unix_now;
use crate::models::looped;
use crate::models::mixed::LoopExecutor;
use crate::models::processes::{ProcessExecutor, WorkerSpec};
use crate::models::threads::ThreadExecutor;
use crate::models::Model;
use crate::plugin_entry::PluginEntry;
use crate::protobuf::{self, PbExecutor, Protocol};
use crate::service::{PluginMeta, Service, Settings};

/// What serves the events of a server on tokio's threads.
enum Serving {
    /// ProtoBuf:1: each connection's thread runs its events; the executor
    /// creates the plugin objects.
    Pb(Arc<PbExecutor>),
    /// MessagePack:1: connections hand each event to the model's executor.
    Rpc(SharedRunner),
}

struct Running {
    /// None in the looped model: the runner's loop serves the socket.
    runtime: Option<Runtime>,
    service: Arc<Service>,
    stop: watch::Sender<bool>,
    /// The socket file as we created it: at shutdown it is removed only if
    /// it is still ours (a newer server may have taken the path meanwhile).
    socket_id: Option<FileId>,
}

#[pyclass(frozen, module = "kong_pdk._core")]
pub struct PluginServer {
    /// The plugins served on this socket, in the order given; Kong names
    /// one in each StartInstance.
    plugins: Vec<Py<PluginEntry>>,
    socket_path: PathBuf,
    settings: (Duration, Duration),
    max_frame: usize,
    backlog: i32,
    async_threads: usize,
    max_handler_threads: usize,
    /// Replace a live server on the path (`--take-over`); without it a
    /// server that answers there makes `start()` fail.
    take_over: bool,
    /// `--handler-timeout`: `None` is off.
    handler_timeout: Option<Duration>,
    /// Where the handlers run, as the Python side chose it (`models/mod.rs`).
    model: Model,
    /// A Python event-loop runner (`kong_pdk/runners.py`) for the models
    /// that need one; each plugin entry says which of its phases run there.
    runner: Option<Py<PyAny>>,
    /// Worker processes (`-m`): each one's command line and private socket.
    /// Empty: handlers run in this process.
    workers: Vec<(Vec<String>, PathBuf)>,
    worker_startup_timeout: Duration,
    /// The wire Kong speaks to this server (the dump's `Protocol`).
    protocol: Protocol,
    running: Mutex<Option<Running>>,
}

fn secs(name: &str, v: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0")))
}

#[pymethods]
impl PluginServer {
    #[new]
    #[pyo3(signature = (
        plugins, socket_path, *,
        model = "threads",
        event_timeout = defaults::EVENT_TIMEOUT,
        instance_ttl = defaults::INSTANCE_TTL, max_frame = defaults::MAX_FRAME,
        listen_backlog = defaults::LISTEN_BACKLOG, async_threads = defaults::IO_THREADS,
        max_handler_threads = defaults::MAX_HANDLER_THREADS,
        handler_timeout = defaults::HANDLER_TIMEOUT,
        runner = None, workers = Vec::new(),
        worker_startup_timeout = defaults::WORKER_STARTUP_TIMEOUT,
        take_over = false, protocol = "msgpack"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        plugins: Vec<Py<PluginEntry>>,
        socket_path: PathBuf,
        model: &str,
        event_timeout: f64,
        instance_ttl: f64,
        max_frame: usize,
        listen_backlog: i32,
        async_threads: usize,
        max_handler_threads: usize,
        handler_timeout: f64,
        runner: Option<Py<PyAny>>,
        workers: Vec<(Vec<String>, PathBuf)>,
        worker_startup_timeout: f64,
        take_over: bool,
        protocol: &str,
    ) -> PyResult<Self> {
        let protocol = Protocol::parse(protocol).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown protocol {protocol:?} (msgpack or protobuf)"
            ))
        })?;
        let model = Model::parse(model).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if model.needs_runner() != runner.is_some() {
            return Err(PyValueError::new_err(format!(
                "the {} model {} runner",
                model.name(),
                if model.needs_runner() {
                    "needs a"
                } else {
                    "takes no"
                }
            )));
        }
        if (model == Model::Processes) == workers.is_empty() {
            return Err(PyValueError::new_err(
                "worker commands are given with the processes model, and only with it",
            ));
        }
        if model.looped() && !plugins.iter().all(|p| p.get().all_on_loop()) {
            return Err(PyValueError::new_err(format!(
                "the {} model runs every phase on the loop: each plugin entry must list all its phases in loop_phases",
                model.name()
            )));
        }
        // ProtoBuf:1 (src/protobuf/) runs on a connection's thread (which
        // also runs a mixing plugin's `async def` phases) or on the runner's
        // loop; worker processes serve MessagePack:1 only.
        if protocol == Protocol::ProtoBuf && matches!(model, Model::Processes | Model::Mixed) {
            return Err(PyValueError::new_err(format!(
                "--protocol protobuf is served by the threads, greenlets, asyncio or gevent model, not {}",
                model.name()
            )));
        }
        if workers.iter().any(|(argv, _)| argv.is_empty()) {
            return Err(PyValueError::new_err("a worker command is empty"));
        }
        if plugins.is_empty() {
            return Err(PyValueError::new_err(
                "a plugin server needs at least one plugin",
            ));
        }
        let mut names = HashSet::new();
        for plugin in &plugins {
            if !names.insert(plugin.get().name.as_str()) {
                return Err(PyValueError::new_err(format!(
                    "two plugins are named '{}'",
                    plugin.get().name
                )));
            }
        }
        Ok(PluginServer {
            plugins,
            socket_path,
            settings: (
                secs("event_timeout", event_timeout)?,
                secs("instance_ttl", instance_ttl)?,
            ),
            max_frame,
            backlog: listen_backlog,
            async_threads: async_threads.max(1),
            max_handler_threads: max_handler_threads.max(1),
            handler_timeout: Some(secs("handler_timeout", handler_timeout)?)
                .filter(|t| !t.is_zero()),
            model,
            runner,
            workers,
            worker_startup_timeout: secs("worker_startup_timeout", worker_startup_timeout)?,
            take_over,
            protocol,
            running: Mutex::new(None),
        })
    }

    /// Binds the socket (removing a stale file first) and starts serving.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Err(PyRuntimeError::new_err("server already started"));
        }
        // Before any worker process starts: a refusal leaves nothing behind.
        check_free(&self.socket_path, self.take_over).map_err(|e| self.bind_error(e))?;
        crate::models::chunk_cache::install(py);
        if let Some(looped) = self.looped_setup(py)? {
            let bound = self.listen()?;
            let service = match self.protocol {
                Protocol::ProtoBuf => protobuf::serve_looped(py, looped, bound.listener)?,
                Protocol::MsgPack => looped::serve(py, looped, bound.listener)?,
            };
            if let Some(link) = bound.predecessor {
                service.set_predecessor(link);
            }
            self.log_serving();
            let (stop, _) = watch::channel(false);
            *running = Some(Running {
                runtime: None,
                service,
                stop,
                socket_id: FileId::of(&self.socket_path),
            });
            return Ok(());
        }
        let runtime = py
            .detach(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.async_threads)
                    .thread_name("kong-pdk")
                    .enable_all()
                    .build()
            })
            .map_err(|e| PyOSError::new_err(format!("cannot start the runtime: {e}")))?;
        // What runs the events: on ProtoBuf:1, each connection's thread
        // (src/protobuf/serve.rs); on MessagePack:1, the model's executor,
        // to which connections hand them (`Dispatcher`).
        let serving = match self.protocol {
            Protocol::ProtoBuf => Serving::Pb(Arc::new(PbExecutor::new(self.classes(py)))),
            Protocol::MsgPack => Serving::Rpc(match self.model {
                Model::Processes => self.start_workers(py, runtime.handle())?,
                _ => self.executor(py, runtime.handle())?,
            }),
        };
        let executor: SharedExecutor = match &serving {
            Serving::Pb(pb) => Arc::clone(pb) as SharedExecutor,
            Serving::Rpc(runner) => Arc::clone(runner) as SharedExecutor,
        };
        let service = Arc::new(Service::new(
            self.metas(),
            self.service_settings(),
            executor,
        ));
        let bound = self.listen()?;
        if let Some(link) = bound.predecessor {
            service.set_predecessor(link);
        }
        let listener = {
            let _guard = runtime.enter();
            UnixListener::from_std(bound.listener)?
        };
        let socket_id = FileId::of(&self.socket_path);
        let (stop, stopped) = watch::channel(false);
        match serving {
            Serving::Rpc(runner) => runtime.spawn(accept_loop(
                listener,
                Arc::new(Dispatcher {
                    service: Arc::clone(&service),
                    runner,
                }),
                self.max_frame,
                stopped.clone(),
            )),
            Serving::Pb(pb) => runtime.spawn(protobuf::accept_loop(
                listener,
                Arc::clone(&service),
                pb,
                self.max_frame,
                self.handler_timeout,
                stopped.clone(),
            )),
        };
        runtime.spawn(reaper(Arc::clone(&service), stopped));
        self.log_serving();
        *running = Some(Running {
            runtime: Some(runtime),
            service,
            stop,
            socket_id,
        });
        Ok(())
    }

    /// Stops taking new instances and events; events in flight go on.
    ///
    /// When a newer server has taken the socket path meanwhile (`--reload`,
    /// or Kong starting the next server early), new work is handed over to
    /// it instead of refused (`Service::start_handing_over`).
    fn begin_drain(&self) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if r.socket_id.is_some() && FileId::of(&self.socket_path) != r.socket_id {
                log::info!(
                    "{} belongs to a newer server: handing new work over to it",
                    self.socket_path.display()
                );
                r.service.start_handing_over(&self.socket_path);
            } else {
                r.service.start_draining();
            }
        }
    }

    /// Events not finished yet (waiting for Kong or running).
    fn busy(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |r| r.service.busy())
    }

    /// Connections a server replaced by a newer one still has open (0 when
    /// it was not replaced): it lets Kong close them, or hands them over.
    fn lingering(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |r| r.service.lingering())
    }

    /// Whether a newer server took the socket path (known once draining).
    fn replaced(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|r| r.service.is_replaced())
    }

    /// Requests being passed on to another server right now.
    fn forwards(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |r| r.service.forwards())
    }

    /// Seconds since the last request arrived on any connection.
    fn quiet_for(&self) -> f64 {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(f64::INFINITY, |r| r.service.quiet_for().as_secs_f64())
    }

    /// Drains and stops; returns True when every event finished in time.
    #[pyo3(signature = (timeout = 10.0))]
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(true);
        };
        let timeout = secs("timeout", timeout)?;
        let path = self.socket_path.clone();
        let clean = py.detach(move || {
            let Running {
                runtime,
                service,
                stop,
                socket_id,
            } = running;
            service.start_draining();
            let deadline = Instant::now() + timeout;
            while service.busy() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let clean = service.busy() == 0;
            if !clean {
                log::warn!(
                    "shutdown: {} event(s) still in flight after {timeout:?}; abandoning them",
                    service.busy()
                );
            }
            drop(service.events.clear());
            let _ = stop.send(true);
            remove_links(&path, socket_id, service.predecessor());
            if socket_id.is_some() && FileId::of(&path) == socket_id {
                if let Err(e) = std::fs::remove_file(&path) {
                    log::debug!("removing {}: {e}", path.display());
                }
            } else {
                log::info!(
                    "{} now belongs to another server; left in place",
                    path.display()
                );
            }
            // Worker processes, if any: after the drain they have nothing in
            // flight; each gets SIGTERM, then SIGKILL if it lingers.
            service.executor.stop();
            if let Some(runtime) = runtime {
                runtime.shutdown_timeout(Duration::from_millis(500));
            }
            drop(service.instances.clear());
            log::info!("plugin server stopped");
            clean
        });
        if let Some(runner) = &self.runner {
            if runner.bind(py).hasattr("close")? {
                runner.bind(py).call_method0("close")?;
            }
        }
        Ok(clean)
    }

    /// The `plugin.GetStatus` result, as a dict.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let service = running
            .as_ref()
            .map(|r| Arc::clone(&r.service))
            .ok_or_else(|| PyRuntimeError::new_err("server is not running"))?;
        drop(running);
        value_to_py(py, &service.status())
    }

    /// The execution model's name (`models/mod.rs`).
    #[getter]
    fn model(&self) -> &'static str {
        self.model.name()
    }

    #[getter]
    fn socket_path(&self) -> PathBuf {
        self.socket_path.clone()
    }
}

/// At shutdown: the link a newer server made to reach this one, and the
/// link to the server this one replaced once that one is gone (it removes
/// it itself unless it was killed).
fn remove_links(
    path: &std::path::Path,
    own: Option<FileId>,
    predecessor: Option<&std::path::Path>,
) {
    if let Some(own) = own {
        let link = crate::handover::predecessor_link(path, own.1);
        if FileId::of(&link) == Some(own) {
            let _ = std::fs::remove_file(&link);
        }
    }
    if let Some(link) = predecessor {
        if FileId::of(link).is_some() && probe(link) == Holder::Nobody {
            let _ = std::fs::remove_file(link);
        }
    }
}

impl PluginServer {
    fn metas(&self) -> Vec<PluginMeta> {
        let now = unix_now();
        self.plugins.iter().map(|p| p.get().meta(now)).collect()
    }

    /// Every plugin's class and error style, for the executors.
    fn classes(&self, py: Python<'_>) -> Arc<PluginClasses> {
        Arc::new(PluginClasses::new(
            self.plugins
                .iter()
                .map(|p| (p.get().name.clone(), p.get().code(py))),
        ))
    }

    /// The plugins' names, for logs.
    fn names(&self) -> String {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.get().name.as_str()).collect();
        names.join(", ")
    }

    fn service_settings(&self) -> Settings {
        Settings {
            event_timeout: self.settings.0,
            instance_ttl: self.settings.1,
        }
    }

    fn listen(&self) -> PyResult<BoundSocket> {
        bind(&self.socket_path, self.backlog, self.take_over).map_err(|e| self.bind_error(e))
    }

    fn bind_error(&self, e: BindError) -> PyErr {
        PyOSError::new_err(format!(
            "cannot listen on {}: {e}",
            self.socket_path.display()
        ))
    }

    fn log_serving(&self) {
        log::info!(
            "serving plugin{} {} on {} (pid {}; model: {}{})",
            if self.plugins.len() > 1 { "s" } else { "" },
            self.names(),
            self.socket_path.display(),
            std::process::id(),
            self.model.name(),
            match self.protocol {
                Protocol::MsgPack => "",
                Protocol::ProtoBuf => "; protocol: ProtoBuf:1",
            }
        );
    }

    /// What the loop models (`models/looped/`: asyncio, gevent, greenlets) need:
    /// the runner's loop serves the socket and runs every handler.
    fn looped_setup(&self, py: Python<'_>) -> PyResult<Option<looped::LoopedSetup>> {
        if !self.model.looped() {
            return Ok(None);
        }
        let runner = self
            .runner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("a loop model needs a runner"))?;
        Ok(Some(looped::LoopedSetup {
            runner: runner.clone_ref(py),
            plugins: self.classes(py),
            max_frame: self.max_frame,
            metas: self.metas(),
            settings: self.service_settings(),
            handler_timeout: self.handler_timeout,
        }))
    }

    /// The worker-process model: spawns the workers and waits until each
    /// serves its socket, so that Kong's first StartInstance reaches them.
    fn start_workers(
        &self,
        py: Python<'_>,
        runtime: &tokio::runtime::Handle,
    ) -> PyResult<SharedRunner> {
        let specs = self
            .workers
            .iter()
            .map(|(argv, socket)| WorkerSpec {
                argv: argv.clone(),
                socket: socket.clone(),
            })
            .collect();
        let executor = ProcessExecutor::start(runtime.clone(), self.max_frame, specs)
            .map_err(|e| PyOSError::new_err(format!("cannot start worker processes: {e}")))?;
        let timeout = self.worker_startup_timeout;
        let ready = py.detach(|| executor.wait_ready(timeout));
        if let Err(e) = ready {
            py.detach(|| executor.stop());
            return Err(PyRuntimeError::new_err(e));
        }
        Ok(Arc::new(executor))
    }

    /// Threads; in the mixed model, the phases in `loop_phases` go to the
    /// runner's asyncio loop through the bridge.
    fn executor(&self, py: Python<'_>, runtime: &tokio::runtime::Handle) -> PyResult<SharedRunner> {
        let classes = self.classes(py);
        let threads: SharedRunner = Arc::new(ThreadExecutor::new(
            Arc::clone(&classes),
            self.max_handler_threads,
            self.handler_timeout,
            runtime.clone(),
        ));
        let (Model::Mixed, Some(runner)) = (self.model, &self.runner) else {
            return Ok(threads);
        };
        let looped: SharedRunner = Arc::new(LoopExecutor::attach(
            py,
            runner.clone_ref(py),
            classes,
            runtime.clone(),
        )?);
        let loop_phases: HashMap<String, Vec<_>> = self
            .plugins
            .iter()
            .map(|p| (p.get().name.clone(), p.get().loop_phases.clone()))
            .collect();
        Ok(Arc::new(PhaseRouter {
            default: threads,
            looped: Some((looped, loop_phases)),
        }))
    }
}
