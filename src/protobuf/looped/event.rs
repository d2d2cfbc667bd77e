//! One event of the looped ProtoBuf:1 server behind its `kong` object
//! (`PdkTarget`) and its handle (the runner reports the handler's end on
//! it). A PDK call writes its frames and hands the handler a token of the
//! runner's loop; the reply, read by the loop, resumes it (`mod.rs`).
//!
//! Calls whose replies nobody waits for (a terminal call, failing the event
//! closed) are written at once with the event's end behind them: Kong
//! answers them in order, and the connection skips those replies.
//!
//! `--handler-timeout` (`time_out`): a handler that holds Kong's request
//! past the limit has its event taken from it and failed closed there and
//! then, with the same frames as a handler that raised; its later PDK calls
//! raise `EventAbandoned`. As in MessagePack:1's looped model
//! (`models/looped/event.rs`), this is checked whenever the handler yields
//! (a PDK call, its end) and on each of the loop's ticks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use rmpv::Value;

use super::super::args::encode_args;
use super::super::event::pb_method;
use super::super::frame::push_frame;
use super::super::messages::RpcReturn;
use super::link::{LoopConn, SendError, Waiting};
use super::runner::Runner;
use crate::events::fail_closed::timed_out_message;
use crate::events::{Registry, Stage, StageCell};
use crate::executor::{report_for, PluginHandle, Running};
use crate::instances::InFlight;
use crate::pdk::{concurrent_call_error, ended_error, event_abandoned, PdkTarget};
use crate::phase::Phase;
use crate::rpc::map;

/// The body of a 500 that fails an event closed (Kong's own wording).
const ERROR_BODY: &str = r#"{"message":"An unexpected error occurred"}"#;

/// `--handler-timeout`, and the events it watches (every event in flight,
/// by id, while it is on).
pub struct HandlerTimeout {
    pub limit: Duration,
    pub watched: Arc<Registry<Arc<LoopEvent>>>,
}

pub struct LoopEvent {
    pub event_id: u64,
    pub phase: Phase,
    pub plugin: String,
    /// `plugin phase`, as the logs name the event.
    label: Arc<str>,
    lua_style: bool,
    sequence: i64,
    conn: Arc<LoopConn>,
    runner: Arc<Runner>,
    /// `Abandoned` also when the connection failed or Kong stopped answering.
    stage: Arc<StageCell>,
    /// The instance (marked busy) and the server's running count, until
    /// the event ends.
    held: Mutex<Option<(InFlight<PluginHandle>, Running)>>,
    timeout: Option<Arc<HandlerTimeout>>,
}

impl LoopEvent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        event_id: u64,
        phase: Phase,
        label: Arc<str>,
        lua_style: bool,
        sequence: i64,
        conn: Arc<LoopConn>,
        runner: Arc<Runner>,
        instance: InFlight<PluginHandle>,
        running: Running,
        timeout: Option<Arc<HandlerTimeout>>,
    ) -> Self {
        LoopEvent {
            event_id,
            phase,
            plugin: instance.instance().name.clone(),
            label,
            lua_style,
            sequence,
            conn,
            runner,
            stage: Arc::new(StageCell::default()),
            held: Mutex::new(Some((instance, running))),
            timeout,
        }
    }

    fn after_send(&self, py: Python<'_>, sent: Result<bool, SendError>) -> PyResult<()> {
        match sent {
            Ok(true) => {
                self.runner.watch_writable(py, self.conn.fd(), self.conn.id);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(SendError::Busy) => Err(concurrent_call_error("a PDK call")),
            Err(SendError::Closed) => {
                self.stage.take_from_handler();
                Err(PdkTarget::ended_error(self, py))
            }
        }
    }

    /// The handler ended (`message`: it raised, and the event fails closed
    /// with it). Writes the event's end once.
    pub fn end(&self, py: Python<'_>, message: Option<String>) {
        let Some(held) = self.held.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        if let Some(t) = &self.timeout {
            drop(t.watched.take(self.event_id));
        }
        // Abandoned: the connection failed, or `time_out` already ended
        // the event for Kong.
        let broken = self.stage.get() == Stage::Abandoned;
        self.stage.leave(Stage::Finished);
        if !broken {
            self.write_end(py, message);
        }
        drop(held);
    }

    /// `--handler-timeout`: when the handler has held Kong's request past
    /// the limit, the event is taken from it (its later PDK calls raise
    /// `EventAbandoned`) and ends for Kong now, failed closed as if the
    /// handler had raised (`kong.log.err`, then a 500 in rewrite/access);
    /// the connection serves Kong's next command meanwhile. Run on the
    /// loop's thread. True when the event was timed out now.
    pub fn time_out(&self, py: Python<'_>) -> bool {
        let Some(t) = &self.timeout else {
            return false;
        };
        let overran = self
            .conn
            .held_since(self.sequence)
            .is_some_and(|since| since.elapsed() >= t.limit);
        if !overran || !self.stage.leave(Stage::Abandoned) {
            return false;
        }
        drop(t.watched.take(self.event_id));
        let message = timed_out_message(&self.label, t.limit);
        log::error!("event {}: {message}", self.event_id);
        self.write_end(py, Some(message));
        true
    }

    /// Writes the event's end: with `message`, first the calls that fail it
    /// closed (the same sequence as `refuse_event` in `mod.rs`).
    fn write_end(&self, py: Python<'_>, message: Option<String>) {
        let mut frames = Vec::new();
        let mut unwaited = 0;
        if let Some(message) = message {
            unwaited += push_call(&mut frames, "kong.log.err", &[Value::from(message)]);
            if self.phase.can_respond() {
                let headers = map(vec![(
                    "Content-Type",
                    Value::from("application/json; charset=utf-8"),
                )]);
                unwaited += push_call(
                    &mut frames,
                    "kong.response.exit",
                    &[Value::from(500), Value::from(ERROR_BODY), headers],
                );
            }
        }
        if unwaited > 0 {
            let sent = self.conn.send_unwaited(&frames, unwaited);
            if let Ok(true) = sent {
                self.runner.watch_writable(py, self.conn.fd(), self.conn.id);
            }
            frames.clear();
        }
        let end = RpcReturn {
            sequence: self.sequence,
            r#return: None,
        };
        let _ = push_frame(&mut frames, b"");
        let _ = push_frame(&mut frames, &prost::Message::encode_to_vec(&end));
        let (sent, left) = self.conn.end_event(&frames);
        if let Ok(true) = sent {
            self.runner.watch_writable(py, self.conn.fd(), self.conn.id);
        }
        if let Some(left) = left {
            let err = ended_error(py, Stage::Finished, self.event_id);
            let _ = self.runner.tokens.resolve(left.token.bind(py), Err(err));
        }
    }
}

/// Appends a call's frames; 1 when it was encoded (a reply will come).
fn push_call(out: &mut Vec<u8>, name: &str, args: &[Value]) -> usize {
    let Ok(method) = pb_method(name) else {
        return 0;
    };
    let mut packed = Vec::new();
    if rmpv::encode::write_value(&mut packed, &Value::Array(args.to_vec())).is_err() {
        return 0;
    }
    let Ok(payload) = encode_args(method, &packed) else {
        return 0;
    };
    let _ = push_frame(out, method.name.as_bytes());
    let _ = push_frame(out, &payload);
    1
}

impl PdkTarget for LoopEvent {
    fn event_id(&self) -> u64 {
        self.event_id
    }
    fn phase(&self) -> Phase {
        self.phase
    }
    fn stage(&self) -> Stage {
        self.stage.get()
    }
    fn terminal(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<()> {
        let m = pb_method(&method)?;
        let payload = encode_args(m, &args).map_err(|e| PyTypeError::new_err(e.0))?;
        self.time_out(py);
        if !self.is_running() {
            return Err(PdkTarget::ended_error(self, py));
        }
        let mut frames = Vec::with_capacity(8 + m.name.len() + payload.len());
        let _ = push_frame(&mut frames, m.name.as_bytes());
        let _ = push_frame(&mut frames, &payload);
        let sent = self.conn.send_unwaited(&frames, 1);
        self.after_send(py, sent)?;
        self.stage.leave(Stage::Exited);
        Ok(())
    }
    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = pb_method(&method)?;
        let payload = encode_args(m, &args).map_err(|e| PyTypeError::new_err(e.0))?;
        self.time_out(py);
        if !self.is_running() {
            return Err(PdkTarget::ended_error(&*self, py));
        }
        let token = self.runner.tokens.new_token(py)?;
        let mut frames = Vec::with_capacity(8 + m.name.len() + payload.len());
        let _ = push_frame(&mut frames, m.name.as_bytes());
        let _ = push_frame(&mut frames, &payload);
        let waiting = Waiting {
            token: token.clone().unbind(),
            ret: m.ret,
            name: m.name,
            lua_style: self.lua_style,
            event_id: self.event_id,
            stage: Arc::clone(&self.stage),
            since: Instant::now(),
        };
        match self.conn.send_call(&frames, waiting) {
            Err(SendError::Busy) => return Err(concurrent_call_error(m.name)),
            sent => self.after_send(py, sent)?,
        }
        self.runner.tokens.wait(token)
    }
}

/// What the runner reports a handler's end on.
#[pyclass(frozen, module = "kong_pdk._core", name = "ProtobufEventHandle")]
pub struct PbHandle {
    pub event: Arc<LoopEvent>,
}

#[pymethods]
impl PbHandle {
    /// The handler returned. Past `--handler-timeout` the event fails
    /// closed all the same, as the thread model's watchdog would have done
    /// while it ran.
    fn finish(&self, py: Python<'_>) {
        self.event.time_out(py);
        self.event.end(py, None);
    }

    /// The handler raised `exc`: logged, and the event fails closed (past
    /// `--handler-timeout` Kong gets the timeout; the exception is then
    /// only logged).
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        self.event.time_out(py);
        let err = PyErr::from_value(exc);
        let e = &self.event;
        let message = report_for(py, &**e, e.phase, &e.plugin, &err);
        e.end(py, message);
    }
}

/// The stall watchdog's name for a `PbHandle`
/// (`models/looped/watchdog.rs`).
pub fn name_handle(handle: &Bound<'_, PyAny>) -> Option<String> {
    let event = &handle.cast::<PbHandle>().ok()?.get().event;
    Some(format!("event {}: {} handler", event.event_id, event.label))
}

/// The error a handler waiting on a connection that closed gets.
pub fn abandoned(py: Python<'_>, event_id: u64) -> PyErr {
    event_abandoned(
        py,
        format!("event {event_id}: Kong closed the connection before answering"),
    )
}
