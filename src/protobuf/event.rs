//! One event on ProtoBuf:1 behind its `kong` object (the PDK proxy's
//! `PdkTarget`): each PDK call is written on the event's connection and
//! answered there, read by the handler's own thread with the GIL released.
//!
//! A function ProtoBuf:1 lacks raises where it is called and sends nothing:
//! Kong would fail the request on a method it does not know.
//!
//! `--handler-timeout`: the event keeps since when its handler has held
//! Kong's request (the event began, or Kong's last reply came; never while
//! a call waits for Kong). The watchdog (`timeout.rs`) takes the event from
//! a handler past the limit (`take`), under the same lock under which the
//! handler starts each call: so either the call goes out, or the event is
//! the watchdog's and the call raises `EventAbandoned`; never both write.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyNotImplementedError, PyTypeError};
use pyo3::prelude::*;

use super::args::encode_args;
use super::conn::Conn;
use super::methods::{find, PbMethod};
use super::ready::Ready;
use super::reply::decode_reply;
use crate::events::{Answer, Stage, StageCell};
use crate::pdk::{answer_to_py, concurrent_call_error, PdkTarget};
use crate::phase::Phase;

/// The ProtoBuf:1 method of `name`, or the error the plugin sees.
pub fn pb_method(name: &str) -> PyResult<&'static PbMethod> {
    find(name).ok_or_else(|| {
        PyNotImplementedError::new_err(format!(
            "{name} is not available on ProtoBuf:1 (Kong's protobuf plugin wire has no such \
             call; Kong would fail the request): serve this plugin with --protocol msgpack \
             to use it (docs/protobuf.md)"
        ))
    })
}

/// Which HandleEvent an event answers, and how the logs name it.
pub struct Command {
    /// The `RpcCall`'s sequence, echoed by the event's `RpcReturn`.
    pub sequence: i64,
    /// `plugin phase`.
    pub label: Arc<str>,
}

pub struct PbEvent {
    pub event_id: u64,
    pub phase: Phase,
    pub command: Command,
    lua_style: bool,
    /// The handler is `async def`: calls return awaitables.
    awaitable: bool,
    conn: Arc<Conn>,
    /// `Abandoned` also when the connection failed or Kong stopped
    /// answering: nothing more can be said on it, and it is closed after
    /// the handler.
    stage: StageCell,
    /// One call at a time: Kong answers an event's calls in order.
    in_call: Mutex<()>,
    reply_timeout: Duration,
    /// Since when the handler has held Kong's request; `None` while a call
    /// waits for Kong and once the handler is over. Its lock orders the
    /// handler's calls against the watchdog's `take`.
    held: Mutex<Option<Instant>>,
}

impl PbEvent {
    pub fn new(
        event_id: u64,
        phase: Phase,
        command: Command,
        lua_style: bool,
        awaitable: bool,
        conn: Arc<Conn>,
        reply_timeout: Duration,
    ) -> Self {
        PbEvent {
            event_id,
            phase,
            command,
            lua_style,
            awaitable,
            conn,
            stage: StageCell::default(),
            in_call: Mutex::new(()),
            reply_timeout,
            held: Mutex::new(Some(Instant::now())),
        }
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handler is about to send a call: false when the event is no
    /// longer its own (the watchdog took it, Kong stopped answering).
    fn claim_for_call(&self) -> bool {
        let mut held = self.held();
        let running = self.stage.is_running();
        if running {
            *held = None;
        }
        running
    }

    /// Kong answered: the handler holds the request again.
    fn hold_again(&self) {
        *self.held() = Some(Instant::now());
    }

    /// The handler's code is over (returned or raised): the watchdog can no
    /// longer take the event, and its ending is the handler's thread's to
    /// send unless the watchdog took it before (then `is_broken`).
    pub fn release(&self) {
        *self.held() = None;
    }

    /// `--handler-timeout`: takes the event from a handler that has held
    /// Kong's request for `limit`. True when taken now: its later calls
    /// raise `EventAbandoned`, and its return sends nothing.
    pub fn take(&self, limit: Duration) -> bool {
        let mut held = self.held();
        let overran = held.is_some_and(|since| since.elapsed() >= limit);
        if !overran || !self.stage.leave(Stage::Abandoned) {
            return false;
        }
        *held = None;
        true
    }

    /// Whether the connection can still carry the event's end.
    pub fn is_broken(&self) -> bool {
        self.stage.get() == Stage::Abandoned
    }

    /// The handler is over: later calls (from a thread it left behind) raise.
    pub fn finish(&self) {
        self.stage.leave(Stage::Finished);
    }

    /// Sends one call and waits for Kong's reply, detached from Python;
    /// `terminal`: the call ends the event, so the handler does not hold
    /// Kong's request after it.
    fn ask(
        &self,
        py: Python<'_>,
        method: &PbMethod,
        args: &[u8],
        terminal: bool,
    ) -> PyResult<Answer> {
        let payload = encode_args(method, args).map_err(|e| PyTypeError::new_err(e.0))?;
        let Ok(_one) = self.in_call.try_lock() else {
            return Err(concurrent_call_error(method.name));
        };
        if !self.claim_for_call() {
            return Err(PdkTarget::ended_error(self, py));
        }
        let reply = py.detach(|| self.conn.ask(method.name, &payload, self.reply_timeout));
        if reply.is_ok() && !terminal {
            self.hold_again();
        }
        match reply {
            Ok(bytes) => Ok(decode_reply(method.ret, &bytes).unwrap_or_else(|e| {
                log::warn!(
                    "event {}: Kong's reply to {} is not a {}: {}",
                    self.event_id,
                    method.name,
                    method.ret.message(),
                    e.0
                );
                Answer::Error(format!(
                    "Kong's reply to {} could not be decoded",
                    method.name
                ))
            })),
            Err(e) => {
                log::warn!(
                    "event {}: {} got no reply from Kong: {e}",
                    self.event_id,
                    method.name
                );
                self.stage.take_from_handler();
                Err(PdkTarget::ended_error(self, py))
            }
        }
    }

    /// A call the core makes for the handler (failing an event closed):
    /// `false` when the connection broke.
    pub fn ask_quietly(&self, name: &str, args: &[u8]) -> bool {
        let Some(method) = find(name) else {
            return false;
        };
        let Ok(payload) = encode_args(method, args) else {
            return false;
        };
        if self.is_broken() {
            return false;
        }
        match self.conn.ask(method.name, &payload, self.reply_timeout) {
            Ok(_) => true,
            Err(e) => {
                log::warn!(
                    "event {}: {name} got no reply from Kong: {e}",
                    self.event_id
                );
                self.stage.take_from_handler();
                false
            }
        }
    }
}

impl PdkTarget for PbEvent {
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
        self.ask(py, m, &args, true)?;
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
        let answer = self.ask(py, m, &args, false)?;
        let value = answer_to_py(py, answer, self.lua_style)?;
        if self.awaitable {
            Ok(Bound::new(py, Ready::new(value))?.into_any())
        } else {
            Ok(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn event() -> (PbEvent, UnixStream) {
        let (ours, kong) = UnixStream::pair().expect("socketpair");
        let conn = Conn::new(ours, 1 << 20, Arc::new(AtomicBool::new(false))).expect("conn");
        let command = Command {
            sequence: 2,
            label: Arc::from("p access"),
        };
        let event = PbEvent::new(
            7,
            Phase::Access,
            command,
            true,
            false,
            Arc::new(conn),
            Duration::from_secs(5),
        );
        (event, kong)
    }

    const LIMIT: Duration = Duration::from_millis(30);

    #[test]
    fn a_handler_past_the_limit_is_taken_once() {
        let (event, _kong) = event();
        assert!(!event.take(LIMIT), "not before the limit");
        std::thread::sleep(LIMIT);
        assert!(event.take(LIMIT));
        assert!(event.is_broken(), "its calls and its end send nothing");
        assert!(!event.claim_for_call());
        assert!(!event.take(LIMIT), "taken once");
    }

    #[test]
    fn a_handler_waiting_for_kong_or_over_is_not_taken() {
        let (event, _kong) = event();
        assert!(event.claim_for_call());
        std::thread::sleep(LIMIT);
        assert!(!event.take(LIMIT), "a call waits for Kong");
        event.hold_again();
        assert!(!event.take(LIMIT), "the clock restarts at Kong's answer");
        std::thread::sleep(LIMIT);
        event.release();
        assert!(
            !event.take(LIMIT),
            "the handler returned: its ending is its own"
        );
        event.finish();
        assert!(!event.is_broken());
    }

    #[test]
    fn an_ended_event_is_not_taken() {
        let (event, _kong) = event();
        event.stage.leave(Stage::Exited);
        std::thread::sleep(LIMIT);
        assert!(
            !event.take(LIMIT),
            "the response went out: Kong has its answer"
        );
    }
}
