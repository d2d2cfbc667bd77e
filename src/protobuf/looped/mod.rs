//! ProtoBuf:1 on a Python event loop (every phase `async def`, `-g`, or
//! greenlets for plain `def` handlers that never block): the runner's loop thread (`kong_pdk/runners.py`) owns Kong's socket, as
//! in the MessagePack looped model, through the same runner protocol: it
//! watches `poll_fd` and calls `ready()`, `writable(conn)`, `tick()`,
//! `beat()` and `stop()`; this core calls back `start`, `new_token`, `wait`,
//! `watch_writable`, `unwatch_writable`, `forget` and `pause_accepting`.
//!
//! A PDK call writes its two frames and returns the runner's token (an
//! asyncio future, or a gevent waiter the greenlet blocks on); the reply,
//! read by the loop from the event's own connection, resolves it. No thread
//! switch is on the path of an event.
//!
//! The safety nets are MessagePack:1's looped model's: the stall watchdog
//! (`models/looped/watchdog.rs`; the runner's timer beats its heartbeat)
//! names a handler that holds the loop, and `--handler-timeout` fails
//! closed the event of a handler that holds Kong's request past it
//! (`event.rs`, `time_out`, on each `tick()` and whenever a handler yields).
//!
//! The rooms: `link.rs` a connection (the epoll set is MessagePack:1's,
//! `models/looped/poller.rs`), `runner.rs`
//! the runner's side (its tokens are MessagePack:1's,
//! `models/looped/tokens.rs`), `event.rs` an event behind its `kong`
//! object and handle (its stage is `events::StageCell`, as in every model).

mod event;
mod link;
mod runner;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;
use pyo3::prelude::*;
use rmpv::Value;

use super::commands::{answer, Answered};
use super::event::pb_method;
use super::executor::PbExecutor;
use super::frame::push_frame;
use super::ids::ShortIds;
use super::messages::rpc_call::Call;
use super::messages::{CmdHandleEvent, RpcCall, RpcReturn};
use super::reply::decode_reply;
use super::shared::Shared;
use crate::events::{Answer, Registry};
use crate::models::looped::poller::Poller;
use crate::models::looped::tokens::Tokens;
use crate::models::looped::watchdog::{self, Heartbeat};
use crate::models::looped::{tick_period, LoopedSetup};
use crate::pdk::{answer_to_py, PdkProxy};
use crate::phase::Phase;
use crate::rpc_error::RpcError;
use crate::service::Service;
use event::{abandoned, HandlerTimeout, LoopEvent, PbHandle};
use link::{Incoming, LoopConn, SendError};
use runner::Runner;

/// The listener's token in the epoll set (connections count from 1).
const LISTENER: u64 = 0;

struct Core {
    shared: Arc<Shared>,
    runner: Arc<Runner>,
    poll: Poller,
    listener: Mutex<Option<UnixListener>>,
    conns: Mutex<HashMap<u64, Arc<LoopConn>>>,
    next_conn: AtomicU64,
    stopped: AtomicBool,
    /// `--handler-timeout` and the events it watches; `None` when off.
    timeout: Option<Arc<HandlerTimeout>>,
    /// Beaten by the loop's timer, read by the stall watchdog.
    heartbeat: Arc<Heartbeat>,
}

/// Serves `listener` from the runner's loop; returns the service.
pub fn serve(py: Python<'_>, setup: LoopedSetup, listener: UnixListener) -> PyResult<Arc<Service>> {
    let LoopedSetup {
        runner,
        plugins: classes,
        max_frame,
        metas,
        settings,
        handler_timeout,
    } = setup;
    listener.set_nonblocking(true)?;
    let tick_period = tick_period(settings.event_timeout, handler_timeout);
    let heartbeat = Arc::new(Heartbeat::new(watchdog::stall_threshold(handler_timeout)));
    watchdog::watch(&heartbeat, handler_timeout, event::name_handle)?;
    let timeout = handler_timeout.map(|limit| {
        Arc::new(HandlerTimeout {
            limit,
            watched: Arc::new(Registry::default()),
        })
    });
    let exec = Arc::new(PbExecutor::new(classes));
    let service = Arc::new(Service::new(metas, settings, Arc::clone(&exec) as _));
    let poll = Poller::new()?;
    poll.add(listener.as_raw_fd(), LISTENER)?;
    let tokens = Tokens::of_runner(py, runner.bind(py))?;
    let core = Arc::new(Core {
        shared: Arc::new(Shared {
            service: Arc::clone(&service),
            exec,
            ids: ShortIds::from_clock(),
            max_frame,
            stop: Arc::new(AtomicBool::new(false)),
            // The loop watches its events itself (`HandlerTimeout`).
            watched: None,
        }),
        runner: Arc::new(Runner {
            runner: runner.clone_ref(py),
            tokens,
        }),
        poll,
        listener: Mutex::new(Some(listener)),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        stopped: AtomicBool::new(false),
        timeout,
        heartbeat,
    });
    let handle = Bound::new(
        py,
        ProtobufLoopCore {
            poll_fd: core.poll.fd(),
            tick_period,
            core,
        },
    )?;
    runner.call_method1(py, "serve", (handle,))?;
    Ok(service)
}

impl Core {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<LoopConn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept(&self, py: Python<'_>) {
        let listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = &*listener else { return };
        loop {
            match l.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("ProtoBuf:1 connection not served: {e}");
                        continue;
                    }
                    let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
                    let conn = Arc::new(LoopConn::new(
                        id,
                        stream,
                        self.shared.max_frame,
                        self.timeout.is_some(),
                    ));
                    if let Err(e) = self.poll.add(conn.fd(), id) {
                        log::warn!("ProtoBuf:1 connection not watched: {e}");
                        continue;
                    }
                    self.shared
                        .service
                        .connections
                        .fetch_add(1, Ordering::AcqRel);
                    self.conns().insert(id, conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: stop watching the
                    // listener for a second rather than spin on it.
                    log::error!("accepting a connection failed: {e}");
                    self.poll.remove(l.as_raw_fd());
                    drop(listener);
                    let _ = self
                        .runner
                        .runner
                        .call_method1(py, "pause_accepting", (1.0,));
                    return;
                }
            }
        }
    }

    fn readable(&self, py: Python<'_>, id: u64) {
        let Some(conn) = self.conns().get(&id).cloned() else {
            return;
        };
        loop {
            match conn.next_frame() {
                Ok(Some(frame)) => {
                    self.shared.service.note_request();
                    if !self.on_frame(py, &conn, frame) {
                        self.close(py, &conn);
                        return;
                    }
                    // Level-triggered: the epoll set reports the socket
                    // again if Kong sent more meanwhile.
                    if !conn.has_buffered() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    if !matches!(e, super::frame::FrameError::Closed) {
                        log::warn!("ProtoBuf:1 connection closed: {e}");
                    }
                    self.close(py, &conn);
                    return;
                }
            }
        }
    }

    /// Acts on one frame; false when the connection must close.
    fn on_frame(&self, py: Python<'_>, conn: &Arc<LoopConn>, frame: Vec<u8>) -> bool {
        match conn.classify(frame) {
            Incoming::Nothing => true,
            Incoming::Reply(waiting, frame) => {
                let answer = decode_reply(waiting.ret, &frame).unwrap_or_else(|e| {
                    log::warn!(
                        "event {}: Kong's reply to {} is not a {}: {}",
                        waiting.event_id,
                        waiting.name,
                        waiting.ret.message(),
                        e.0
                    );
                    Answer::Error(format!(
                        "Kong's reply to {} could not be decoded",
                        waiting.name
                    ))
                });
                let value = answer_to_py(py, answer, waiting.lua_style);
                if let Err(e) = self.runner.tokens.resolve(waiting.token.bind(py), value) {
                    log::error!("resuming a handler failed: {e}");
                }
                true
            }
            Incoming::Call(frame) => self.on_call(py, conn, &frame),
        }
    }

    fn on_call(&self, py: Python<'_>, conn: &Arc<LoopConn>, frame: &[u8]) -> bool {
        let call = match RpcCall::decode(frame) {
            Ok(call) => call,
            Err(e) => {
                log::warn!(
                    "a frame that is not an RpcCall ({} bytes): {e}",
                    frame.len()
                );
                return self.reply(py, conn, 0, None);
            }
        };
        let sequence = call.sequence;
        match call.call {
            Some(Call::CmdHandleEvent(cmd)) => self.start_event(py, conn, sequence, &cmd),
            Some(cmd) => match answer(&self.shared, cmd) {
                Answered::Return(ret) => self.reply(py, conn, sequence, ret),
                Answered::Failed => self.reply(py, conn, sequence, None),
                Answered::HandedOver => false,
            },
            None => {
                log::warn!("an RpcCall without a command (sequence {sequence})");
                self.reply(py, conn, sequence, None)
            }
        }
    }

    fn reply(
        &self,
        py: Python<'_>,
        conn: &LoopConn,
        sequence: i64,
        ret: Option<super::messages::rpc_return::Return>,
    ) -> bool {
        let msg = RpcReturn {
            sequence,
            r#return: ret,
        };
        let mut frames = Vec::new();
        let _ = push_frame(&mut frames, &msg.encode_to_vec());
        self.after_send(py, conn, conn.send(&frames))
    }

    fn after_send(&self, py: Python<'_>, conn: &LoopConn, sent: Result<bool, SendError>) -> bool {
        match sent {
            Ok(true) => {
                self.runner.watch_writable(py, conn.fd(), conn.id);
                true
            }
            Ok(false) => true,
            Err(_) => false,
        }
    }

    /// A HandleEvent: the handler starts on the runner's loop.
    fn start_event(
        &self,
        py: Python<'_>,
        conn: &Arc<LoopConn>,
        sequence: i64,
        cmd: &CmdHandleEvent,
    ) -> bool {
        let shared = &self.shared;
        let Some(long) = shared.ids.long(cmd.instance_id) else {
            log::info!(
                "no plugin instance #{}: closing the connection so that Kong starts it again",
                cmd.instance_id
            );
            return false;
        };
        let accepted = match shared.service.accept_event(long, &cmd.event_name) {
            Ok(event) => event,
            Err(RpcError::NoInstance(_)) => {
                shared.ids.forget(cmd.instance_id);
                log::info!(
                    "no plugin instance #{}: closing the connection so that Kong starts it again",
                    cmd.instance_id
                );
                return false;
            }
            Err(RpcError::HandedOver) => return false,
            Err(e) => {
                log::log!(e.log_level(), "HandleEvent: {e}");
                return self.refuse_event(
                    py,
                    conn,
                    sequence,
                    &cmd.event_name,
                    &format!("event not run: {e}"),
                );
            }
        };
        conn.begin_event(sequence);
        let lua_style = shared
            .exec
            .classes
            .lua_style(&accepted.instance.instance().name);
        let object = accepted.instance.instance().handle.object(py);
        let event = Arc::new(LoopEvent::new(
            accepted.id,
            accepted.phase,
            accepted.label,
            lua_style,
            sequence,
            Arc::clone(conn),
            Arc::clone(&self.runner),
            accepted.instance,
            shared.exec.running_guard(),
            self.timeout.clone(),
        ));
        // Watched before it starts: an eager start may end it right away.
        if let Some(t) = &self.timeout {
            t.watched.insert(event.event_id, Arc::clone(&event));
        }
        let started = object.and_then(|object| {
            let kong = Bound::new(py, PdkProxy::root(Arc::clone(&event)))?;
            let handle = Bound::new(
                py,
                PbHandle {
                    event: Arc::clone(&event),
                },
            )?;
            self.runner
                .runner
                .call_method1(py, "start", (object, event.phase.name(), kong, handle))
        });
        if let Err(e) = started {
            crate::executor::log_traceback(py, &e, "starting a handler");
            event.end(
                py,
                Some(format!(
                    "{} {} handler not started: {e}",
                    event.plugin,
                    event.phase.name()
                )),
            );
        }
        true
    }

    /// An event no handler runs for (draining, an unknown phase): failed
    /// closed, then ended.
    fn refuse_event(
        &self,
        py: Python<'_>,
        conn: &LoopConn,
        sequence: i64,
        phase: &str,
        message: &str,
    ) -> bool {
        let mut frames = Vec::new();
        let mut calls = Vec::new();
        let mut args = Vec::new();
        let _ = rmpv::encode::write_value(&mut args, &Value::Array(vec![Value::from(message)]));
        calls.push(("kong.log.err", args));
        if Phase::parse(phase).is_some_and(Phase::can_respond) {
            let mut args = Vec::new();
            let exit = Value::Array(vec![
                Value::from(500),
                Value::from(r#"{"message":"An unexpected error occurred"}"#),
            ]);
            let _ = rmpv::encode::write_value(&mut args, &exit);
            calls.push(("kong.response.exit", args));
        }
        let mut unwaited = 0;
        for (name, args) in calls {
            if let Ok(m) = pb_method(name) {
                if let Ok(payload) = super::args::encode_args(m, &args) {
                    let _ = push_frame(&mut frames, name.as_bytes());
                    let _ = push_frame(&mut frames, &payload);
                    unwaited += 1;
                }
            }
        }
        let end = RpcReturn {
            sequence,
            r#return: None,
        };
        let _ = push_frame(&mut frames, b"");
        let _ = push_frame(&mut frames, &end.encode_to_vec());
        self.after_send(py, conn, conn.send_unwaited(&frames, unwaited))
    }

    fn close(&self, py: Python<'_>, conn: &Arc<LoopConn>) {
        if self.conns().remove(&conn.id).is_none() {
            return;
        }
        self.poll.remove(conn.fd());
        let (waiting, watched) = conn.close();
        if watched {
            self.runner.forget(py, conn.fd());
        }
        self.shared
            .service
            .connections
            .fetch_sub(1, Ordering::AcqRel);
        if let Some(w) = waiting {
            w.stage.take_from_handler();
            let err = abandoned(py, w.event_id);
            if let Err(e) = self.runner.tokens.resolve(w.token.bind(py), Err(err)) {
                log::error!("waking a handler failed: {e}");
            }
        }
    }
}

/// The core's side of a looped ProtoBuf:1 server, handed to the runner.
#[pyclass(frozen, module = "kong_pdk._core")]
pub struct ProtobufLoopCore {
    core: Arc<Core>,
    poll_fd: RawFd,
    tick_period: f64,
}

#[pymethods]
impl ProtobufLoopCore {
    #[getter]
    fn poll_fd(&self) -> RawFd {
        self.poll_fd
    }

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
    /// reads.
    fn beat(&self) {
        self.core.heartbeat.beat();
    }

    /// Serves the listener and every connection that is readable.
    fn ready(&self, py: Python<'_>) {
        for token in self.core.poll.ready() {
            if token == LISTENER {
                self.core.accept(py);
            } else {
                self.core.readable(py, token);
            }
        }
    }

    fn resume_accepting(&self) {
        let listener = self.core.listener.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &*listener {
            if let Err(e) = self.core.poll.add(l.as_raw_fd(), LISTENER) {
                log::error!("cannot watch the listener again: {e}");
            }
        }
    }

    /// Writes what connection `conn` kept, now that it is writable.
    fn writable(&self, py: Python<'_>, conn: u64) {
        let Some(c) = self.core.conns().get(&conn).cloned() else {
            return;
        };
        match c.flush() {
            Ok(true) => self.core.runner.unwatch_writable(py, c.fd()),
            Ok(false) => {}
            Err(_) => self.core.close(py, &c),
        }
    }

    /// Periodic: `--handler-timeout`, instances and Kong's deadlines; a
    /// replaced server closes its idle connections (Kong's next one reaches
    /// the newer server).
    fn tick(&self, py: Python<'_>) {
        if let Some(t) = &self.core.timeout {
            for event in t.watched.values() {
                event.time_out(py);
            }
        }
        let service = &self.core.shared.service;
        service.reap();
        let limit = service.settings.event_timeout;
        let replaced = service.is_replaced();
        let all: Vec<Arc<LoopConn>> = self.core.conns().values().cloned().collect();
        for conn in all {
            if conn.overdue(limit) {
                log::warn!(
                    "ProtoBuf:1: no reply from Kong within {limit:?}; closing its connection"
                );
                self.core.close(py, &conn);
            } else if replaced && conn.is_idle() {
                self.core.close(py, &conn);
            }
        }
    }

    /// Stops serving: closes the listener and every connection.
    fn stop(&self, py: Python<'_>) {
        if self.core.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.core.heartbeat.stop();
        if let Some(l) = self
            .core
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.core.poll.remove(l.as_raw_fd());
            self.core.runner.forget(py, self.core.poll.fd());
        }
        let all: Vec<Arc<LoopConn>> = self.core.conns().values().cloned().collect();
        for conn in all {
            self.core.close(py, &conn);
        }
    }
}
