//! The looped model: a Python event loop owns the socket.
//!
//! For a plugin whose handlers all run on an event loop (every phase
//! `async def`, or `-g` gevent), the loop's own thread accepts, reads,
//! frames, decodes and writes, calling into this module with the GIL it
//! already holds. A PDK call writes its request to Kong from the handler's
//! own step and parks the event (`event.rs`); the Step that answers it, read
//! by the same thread, resumes the handler. No other thread, queue or wake-up
//! is on the path of an event, so an event costs no context switch.
//!
//! The Python side is a runner (`kong_pdk/runners.py`) that owns the loop:
//! the core calls `serve(core)` once, then `watch_writable(fd, conn)`,
//! `unwatch_writable(fd)`, `forget(fd)`, `pause_accepting(seconds)`,
//! `start(plugin, phase, kong, handle)`, `new_token()` and `wait(token)`,
//! and resumes a handler itself (`tokens.rs`); the runner watches one descriptor, an
//! epoll set of the listener and every connection (`poller.rs`), and calls
//! back [`LoopCore`]'s `ready()` when it is readable, `writable(conn)`,
//! `resume_accepting()`, `tick()` and, on shutdown, `stop()`.
//!
//! Nothing here blocks: writes that the socket does not take are buffered per
//! connection up to a bound (`conns.rs`). Python is never called while a lock
//! is held: a gevent switch or an asyncio callback may come back in.

mod conns;
mod dispatch;
mod event;
pub mod poller;
pub mod tokens;
pub mod watchdog;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use rmpv::Value;

use crate::executor::plugins::PluginClasses;
use crate::executor::{Executor, PluginHandle};
use crate::handover::{self, BlockingUpstream, Hop};
use crate::rpc::Call;
use crate::service::{PluginMeta, Service, Settings};
use conns::{Conns, Next, Queued};
use event::Registry;
use poller::Poller;
use tokens::Tokens;
use watchdog::Heartbeat;

/// The listener's token in the poller (connection ids start at 1).
const LISTENER: u64 = 0;

pub struct Core {
    pub service: Arc<Service>,
    pub runner: Py<PyAny>,
    /// What a PDK call's token is, and how this core resumes its handler
    /// (`tokens.rs`).
    pub tokens: Tokens,
    /// Every plugin's class and error style.
    pub plugins: Arc<PluginClasses>,
    listener: Mutex<Option<UnixListener>>,
    /// The listener (token [`LISTENER`]) and every connection (its id).
    poller: Poller,
    conns: Mutex<Conns>,
    pub events: Arc<Registry>,
    stopped: AtomicBool,
    /// Each connection's links to a newer server that replaced this one,
    /// and to the older one this one replaced (`handover.rs`), by direction.
    upstreams: Mutex<HashMap<(u64, Hop), BlockingUpstream>>,
    max_frame: usize,
    /// `--handler-timeout` (`event.rs`, `time_out`).
    pub handler_timeout: Option<Duration>,
    /// Beaten by the loop's timer, read by the stall watchdog (`watchdog.rs`).
    heartbeat: Arc<Heartbeat>,
}

impl Core {
    fn conns(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one whole reply on a connection; false when it cannot go out.
    pub fn send(&self, py: Python<'_>, conn: u64, bytes: &[u8]) -> bool {
        let queued = self.conns().send(conn, bytes);
        self.after_write(py, conn, queued)
    }

    fn after_write(&self, py: Python<'_>, conn: u64, queued: Queued) -> bool {
        match queued {
            Queued::Done => true,
            Queued::WatchWritable(fd) => {
                if let Err(e) = self.runner_call(py, "watch_writable", (fd, conn)) {
                    log::error!("connection {conn}: cannot watch for writability: {e}");
                    self.close(py, conn);
                    return false;
                }
                true
            }
            Queued::Drop(why) => {
                if why != conns::CLOSED {
                    log::warn!("connection {conn} dropped: {why}");
                }
                self.close(py, conn);
                false
            }
        }
    }

    /// Passes a request on to the server that replaced this one, on this
    /// connection's own link to it (`handover.rs`); blocks.
    pub fn forward(&self, conn: u64, successor: &Path, call: &Call, msgid: u64) -> Vec<u8> {
        self.exchange(conn, successor, call, msgid, Hop::FromOlder)
            .unwrap_or_else(|e| handover::failed(msgid, &e.to_string()))
    }

    /// Passes a Step back to the server this one replaced; None when that
    /// server cannot be reached. Blocks the loop for one Step of that
    /// server's event (this happens only in the moments after a reload).
    pub fn pass_back(&self, conn: u64, link: &Path, call: &Call, msgid: u64) -> Option<Vec<u8>> {
        match self.exchange(conn, link, call, msgid, Hop::FromNewer) {
            Ok(out) => Some(out),
            Err(e) => {
                handover::unreachable_older(link, &e);
                None
            }
        }
    }

    /// One request over the connection's link in direction `hop`; a
    /// failure after connecting becomes an error reply.
    fn exchange(
        &self,
        conn: u64,
        to: &Path,
        call: &Call,
        msgid: u64,
        hop: Hop,
    ) -> std::io::Result<Vec<u8>> {
        let _counted = self.service.forwarding();
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.service.settings.event_timeout;
        let up = match upstreams.entry((conn, hop)) {
            Entry::Occupied(up) => up.into_mut(),
            Entry::Vacant(slot) => slot.insert(BlockingUpstream::connect(to, self.max_frame)?),
        };
        match up.forward(call, msgid, hop, timeout) {
            Ok(out) => Ok(out),
            Err(why) => {
                upstreams.remove(&(conn, hop));
                Ok(handover::failed(msgid, &why))
            }
        }
    }

    /// Stops watching a connection, then closes it.
    /// Serves a connection's buffered requests one by one, until none is
    /// whole or a reply waits for the peer: then its descriptor leaves the
    /// poller, so its further requests stay in the kernel until it reads
    /// (`writable` brings it back).
    fn serve_requests(self: &Arc<Self>, py: Python<'_>, conn: u64) {
        loop {
            let next = self.conns().next(conn);
            match next {
                Next::Request(incoming) => dispatch::handle(self, py, conn, incoming),
                Next::Nothing => return,
                Next::Pause(fd) => {
                    self.poller.remove(fd);
                    return;
                }
            }
        }
    }

    fn close(&self, py: Python<'_>, conn: u64) {
        let stream = self.conns().remove(conn);
        if let Some(stream) = stream {
            self.poller.remove(stream.as_raw_fd());
            self.service.connections.fetch_sub(1, Ordering::AcqRel);
            self.upstreams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(c, _), _| *c != conn);
            if let Err(e) = self.runner_call(py, "forget", (stream.as_raw_fd(),)) {
                log::error!("connection {conn}: cannot stop watching it: {e}");
            }
            drop(stream);
        }
    }

    /// Resolves a PDK call's token: resumes the handler with Kong's answer.
    pub fn resolve(
        &self,
        py: Python<'_>,
        token: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) {
        if let Err(e) = self.tokens.resolve(token, answer) {
            log::error!(
                "resuming a handler failed: {}",
                crate::executor::describe(py, &e)
            );
        }
    }

    fn runner_call<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> Result<(), String> {
        self.runner
            .bind(py)
            .call_method1(method, args)
            .map(drop)
            .map_err(|e| crate::executor::describe(py, &e))
    }
}

/// The core's side of a looped server, handed to the runner's `serve`.
#[pyclass(frozen, module = "kong_pdk._core")]
pub struct LoopCore {
    core: Arc<Core>,
    listen_fd: RawFd,
    poll_fd: RawFd,
    tick_period: f64,
}

#[pymethods]
impl LoopCore {
    /// The descriptor to watch for readability: an epoll set of the
    /// listener and every connection (`poller.rs`).
    #[getter]
    fn poll_fd(&self) -> RawFd {
        self.poll_fd
    }

    /// Serves every connection (and the listener) that is ready.
    fn ready(&self, py: Python<'_>) {
        for token in self.core.poller.ready() {
            if token == LISTENER {
                self.accept(py);
            } else {
                self.readable(py, token);
            }
        }
    }

    /// Watches the listener again after `pause_accepting`.
    fn resume_accepting(&self) {
        let listener = self.core.listener.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = &*listener {
            if let Err(e) = self.core.poller.add(listener.as_raw_fd(), LISTENER) {
                log::error!("cannot watch the listener again: {e}");
            }
        }
    }

    /// Seconds between two `tick()` calls.
    #[getter]
    fn tick_period(&self) -> f64 {
        self.tick_period
    }

    /// Seconds between two `beat()` calls.
    #[getter]
    fn beat_period(&self) -> f64 {
        self.core.heartbeat.period().as_secs_f64()
    }

    /// The loop turned (from a timer of its own): what the stall watchdog
    /// (`watchdog.rs`) reads.
    fn beat(&self) {
        self.core.heartbeat.beat();
    }

    /// Writes what a connection has buffered, now that it is writable;
    /// once the peer has taken it all, reads and serves its requests again.
    fn writable(&self, py: Python<'_>, conn: u64) {
        let queued = self.core.conns().flush(conn);
        if !self.core.after_write(py, conn, queued) {
            return;
        }
        let settled = self.core.conns().settle(conn);
        if let Some(fd) = settled {
            if let Err(e) = self.core.runner_call(py, "unwatch_writable", (fd,)) {
                log::error!("connection {conn}: {e}");
            }
        }
        let resumed = self.core.conns().resume(conn);
        if let Some(fd) = resumed {
            if let Err(e) = self.core.poller.add(fd, conn) {
                log::error!("connection {conn}: cannot watch it again: {e}");
                self.core.close(py, conn);
                return;
            }
            self.core.serve_requests(py, conn);
        }
    }

    /// Periodic upkeep: fails closed the events past `--handler-timeout`,
    /// abandons events Kong stopped answering, expires idle instances.
    fn tick(&self, py: Python<'_>) {
        let stalled = self.core.conns().stalled();
        for conn in stalled {
            log::warn!(
                "connection {conn} dropped: the peer has read no reply for {} s",
                conns::STALLED_PEER.as_secs()
            );
            self.core.close(py, conn);
        }
        if let Some(limit) = self.core.handler_timeout {
            for event in event::overran(&self.core.events, limit) {
                event.time_out(py);
            }
        }
        let timeout = self.core.service.settings.event_timeout;
        for event in event::stale(&self.core.events, timeout) {
            log::warn!(
                "event {} ({}) abandoned: no Step from Kong for {timeout:?}; failing its pending PDK call",
                event.id,
                event.label
            );
            event.abandon(py, &format!("no Step from Kong for {timeout:?}"));
        }
        // Instances (the service's own event registry is unused here).
        self.core.service.reap();
    }

    /// Shutdown, on the loop's thread: abandons the events still in flight,
    /// closes every connection and the listener.
    fn stop(&self, py: Python<'_>) {
        if self.core.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.heartbeat.stop();
        for event in self.core.events.values() {
            event.abandon(py, "the plugin server is stopping");
        }
        let ids = self.core.conns().ids();
        for conn in ids {
            self.core.close(py, conn);
        }
        let listener = self
            .core
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listener) = listener {
            self.core.poller.remove(listener.as_raw_fd());
        }
        if let Err(e) = self.core.runner_call(py, "forget", (self.poll_fd,)) {
            log::error!("cannot stop watching the connections: {e}");
        }
    }
}

impl LoopCore {
    /// Accepts the pending connections and watches each.
    fn accept(&self, py: Python<'_>) {
        loop {
            let accepted = match &*self.core.listener.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(listener) => listener.accept(),
                None => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::error!("accept failed: {e}");
                    self.core.poller.remove(self.listen_fd);
                    if let Err(e) = self.core.runner_call(py, "pause_accepting", (0.05,)) {
                        log::error!("cannot pause accepting: {e}");
                    }
                    return;
                }
            };
            let added = self.core.conns().add(stream);
            match added {
                Ok((conn, fd)) => {
                    if let Err(e) = self.core.poller.add(fd, conn) {
                        log::error!("cannot watch a new connection: {e}");
                        drop(self.core.conns().remove(conn));
                    } else {
                        self.core.service.connections.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Err(e) => log::warn!("connection dropped: {e}"),
            }
        }
    }

    /// Reads a readable connection and serves the whole requests in it.
    fn readable(&self, py: Python<'_>, conn: u64) {
        let ended = self.core.conns().read(conn);
        self.core.serve_requests(py, conn);
        if ended || self.core.conns().is_closing(conn) {
            self.core.close(py, conn);
        }
    }
}

/// The service's executor in the looped model: instances are created on
/// the loop's thread (the caller); the loop starts its events itself
/// (`dispatch.rs`), so this executor runs none (it is no `RunsEvents`).
struct LoopedExecutor {
    plugins: Arc<PluginClasses>,
    events: Arc<Registry>,
}

impl Executor for LoopedExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.plugins.attach_and_create(plugin, config)
    }

    fn running(&self) -> usize {
        let (waiting, total) = event::counts(&self.events);
        total - waiting
    }

    fn waiting(&self) -> usize {
        event::counts(&self.events).0
    }
}

/// What a looped server needs to start.
pub struct LoopedSetup {
    pub runner: Py<PyAny>,
    pub plugins: Arc<PluginClasses>,
    pub max_frame: usize,
    pub metas: Vec<PluginMeta>,
    pub settings: Settings,
    /// `--handler-timeout`: `None` is off.
    pub handler_timeout: Option<Duration>,
}

/// Seconds between two `tick()` calls: often enough for the event deadline
/// and `--handler-timeout` (a quarter of either, as the thread model's
/// watchdog), within 50 ms and 1 s.
pub fn tick_period(event_timeout: Duration, handler_timeout: Option<Duration>) -> f64 {
    let limit = handler_timeout.map_or(event_timeout, |t| t.min(event_timeout));
    (limit / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
        .as_secs_f64()
}

/// Hands `listener` to the runner's loop; returns the service (for status,
/// draining and shutdown).
pub fn serve(py: Python<'_>, setup: LoopedSetup, listener: UnixListener) -> PyResult<Arc<Service>> {
    listener.set_nonblocking(true)?;
    let events = Arc::new(Registry::default());
    let tick_period = tick_period(setup.settings.event_timeout, setup.handler_timeout);
    let heartbeat = Arc::new(Heartbeat::new(watchdog::stall_threshold(
        setup.handler_timeout,
    )));
    watchdog::watch(&heartbeat, setup.handler_timeout, event::name_handle)?;
    let service = Arc::new(Service::new(
        setup.metas,
        setup.settings,
        Arc::new(LoopedExecutor {
            plugins: Arc::clone(&setup.plugins),
            events: Arc::clone(&events),
        }),
    ));
    let listen_fd = listener.as_raw_fd();
    let poller = Poller::new()?;
    poller.add(listen_fd, LISTENER)?;
    let poll_fd = poller.fd();
    let tokens = Tokens::of_runner(py, setup.runner.bind(py))?;
    let core = Arc::new(Core {
        service: Arc::clone(&service),
        runner: setup.runner.clone_ref(py),
        tokens,
        plugins: setup.plugins,
        listener: Mutex::new(Some(listener)),
        poller,
        conns: Mutex::new(Conns::new(setup.max_frame)),
        events,
        stopped: AtomicBool::new(false),
        upstreams: Mutex::new(HashMap::new()),
        max_frame: setup.max_frame,
        handler_timeout: setup.handler_timeout,
        heartbeat,
    });
    let handle = Bound::new(
        py,
        LoopCore {
            core,
            listen_fd,
            poll_fd,
            tick_period,
        },
    )?;
    setup.runner.bind(py).call_method1("serve", (handle,))?;
    Ok(service)
}
