//! One event on ProtoBuf:1 behind its `kong` object (the PDK proxy's
//! `PdkTarget`): each PDK call is written on the event's connection and
//! answered there, read by the handler's own thread with the GIL released.
//!
//! A function ProtoBuf:1 lacks raises where it is called and sends nothing:
//! Kong would fail the request on a method it does not know.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct PbEvent {
    pub event_id: u64,
    pub phase: Phase,
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
}

impl PbEvent {
    pub fn new(
        event_id: u64,
        phase: Phase,
        lua_style: bool,
        awaitable: bool,
        conn: Arc<Conn>,
        reply_timeout: Duration,
    ) -> Self {
        PbEvent {
            event_id,
            phase,
            lua_style,
            awaitable,
            conn,
            stage: StageCell::default(),
            in_call: Mutex::new(()),
            reply_timeout,
        }
    }

    /// Whether the connection can still carry the event's end.
    pub fn is_broken(&self) -> bool {
        self.stage.get() == Stage::Abandoned
    }

    /// The handler is over: later calls (from a thread it left behind) raise.
    pub fn finish(&self) {
        self.stage.leave(Stage::Finished);
    }

    /// Sends one call and waits for Kong's reply, detached from Python.
    fn ask(&self, py: Python<'_>, method: &PbMethod, args: &[u8]) -> PyResult<Answer> {
        let payload = encode_args(method, args).map_err(|e| PyTypeError::new_err(e.0))?;
        let Ok(_one) = self.in_call.try_lock() else {
            return Err(concurrent_call_error(method.name));
        };
        if !PdkTarget::is_running(self) {
            return Err(PdkTarget::ended_error(self, py));
        }
        let reply = py.detach(|| self.conn.ask(method.name, &payload, self.reply_timeout));
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
        self.ask(py, m, &args)?;
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
        let answer = self.ask(py, m, &args)?;
        let value = answer_to_py(py, answer, self.lua_style)?;
        if self.awaitable {
            Ok(Bound::new(py, Ready::new(value))?.into_any())
        } else {
            Ok(value)
        }
    }
}
