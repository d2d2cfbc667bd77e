//! One event behind its `kong` objects: whether it still runs, how its
//! handler waits for Kong, and the seams the execution models implement.

use std::sync::Arc;

use pyo3::prelude::*;
use tokio::sync::oneshot;

use super::answer::answer_to_py;
use super::exceptions::{concurrent_call_error, ended_error};
use crate::events::{EventLink, Lend, LinkError, Resume, Stage, StageCell};
use crate::phase::Phase;
use crate::writer::ConnWriter;

/// How a handler waits for Kong's answer to a PDK call.
pub enum Waiter {
    /// Thread model: the handler's OS thread blocks, detached from Python.
    Block,
    /// A Python event loop (asyncio, gevent) runs the handler: the call
    /// returns an awaitable that the loop completes when the answer arrives.
    Loop(Arc<dyn LoopWait>),
}

/// How a loop-run event waits for Kong's answers; implemented by the
/// executor that runs it (models/mixed.rs), so that this proxy knows no
/// waiting strategy of its own.
pub trait LoopWait: Send + Sync {
    /// The awaitable of a call whose answer arrives on `answered`.
    fn awaitable<'py>(
        &self,
        py: Python<'py>,
        ctx: Arc<EventCtx>,
        answered: oneshot::Receiver<Resume>,
    ) -> PyResult<Bound<'py, PyAny>>;

    /// An awaitable that raises `err` where it is awaited.
    fn failed<'py>(&self, py: Python<'py>, err: PyErr) -> PyResult<Bound<'py, PyAny>>;
}

/// Per-event state shared by the `kong` objects of one event.
pub struct EventCtx {
    pub event_id: u64,
    pub phase: Phase,
    link: EventLink,
    lua_style: bool,
    stage: StageCell,
    waiter: Waiter,
}

impl Drop for EventCtx {
    /// A handler that vanished without ending its event (its thread died, the
    /// interpreter is exiting) still answers Kong.
    fn drop(&mut self) {
        self.finish();
    }
}

impl EventCtx {
    pub fn new(phase: Phase, link: EventLink, lua_style: bool, waiter: Waiter) -> Self {
        EventCtx {
            event_id: link.event_id,
            phase,
            link,
            lua_style,
            stage: StageCell::default(),
            waiter,
        }
    }

    /// The handler returned: Kong gets `"ret"` unless the event already ended.
    pub fn finish(&self) {
        if self.stage.leave(Stage::Finished) {
            let _ = self.link.done();
        }
    }

    /// The connection that carried `"ret"`, kept for the handler's thread
    /// (`EventLink::keep_connection`).
    pub fn take_connection(&self) -> Option<(Arc<ConnWriter>, Lend)> {
        self.link.take_connection()
    }

    /// Sends a terminal call and ends the event.
    pub fn terminal(&self, method: Arc<str>, args: Vec<u8>) -> bool {
        if !self.stage.leave(Stage::Exited) {
            return false;
        }
        self.link.terminal(&method, &args).is_ok()
    }

    /// Hands one PDK call to the event's channel; the answer comes on the
    /// returned receiver.
    fn send_call(
        &self,
        py: Python<'_>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<oneshot::Receiver<Resume>> {
        if !self.is_running() {
            return Err(self.ended_error(py));
        }
        self.link
            .call(&method, &args)
            .map_err(|e| self.link_error(py, &method, e))
    }

    /// The Python error for an output that could not be sent.
    fn link_error(&self, py: Python<'_>, method: &str, e: LinkError) -> PyErr {
        match e {
            LinkError::Busy if self.is_running() => concurrent_call_error(method),
            _ => self.abandoned(py),
        }
    }

    /// Takes the RPC in flight away from the handler when it has held it
    /// for at least `held_for` (the watchdog), or at once (`ZERO`: a handler
    /// that raised): a link for whoever answers Kong in its place
    /// (`events/fail_closed.rs`). The handler's later calls raise
    /// `EventAbandoned` and its return sends nothing.
    pub fn take_over(&self, held_for: std::time::Duration) -> Option<EventLink> {
        let link = self.link.take_stuck(held_for)?;
        self.stage.take_from_handler();
        Some(link)
    }

    /// The registry dropped our pending answer: deadline or shutdown.
    fn abandoned(&self, py: Python<'_>) -> PyErr {
        self.stage.leave(Stage::Abandoned);
        self.ended_error(py)
    }

    /// Kong's answer as the plugin sees it: `(value, err)` in lua style, the
    /// value or a raised `PDKException` in python style. `None`: no answer
    /// will come (the event was abandoned).
    pub fn answer_to_py<'py>(
        &self,
        py: Python<'py>,
        resume: Option<Resume>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match resume.map(|r| self.link.resume(r)) {
            None => Err(self.abandoned(py)),
            Some(answer) => answer_to_py(py, answer, self.lua_style),
        }
    }

    /// One PDK call as the plugin makes it, in whichever way the event waits.
    fn make_call<'py>(
        self: &Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match &self.waiter {
            Waiter::Block => {
                if !self.is_running() {
                    return Err(self.ended_error(py));
                }
                match py.detach(|| self.link.call_blocking(&method, &args)) {
                    Ok(resume) => self.answer_to_py(py, Some(resume)),
                    Err(e) => Err(self.link_error(py, &method, e)),
                }
            }
            Waiter::Loop(wait) => match self.send_call(py, method, args) {
                Ok(answered) => wait.awaitable(py, Arc::clone(self), answered),
                // A failed awaitable, not a raise at call time: a handler
                // that gathers two calls gets the error where it awaits, and
                // still awaits the call that went out.
                Err(e) => wait.failed(py, e),
            },
        }
    }
}

/// The event behind a `kong` object: what the proxy needs from whichever
/// execution path runs the handler ([`EventCtx`] for threads and the bridged
/// loop, `looped::LoopedEvent` when the loop owns the socket).
pub trait PdkTarget: Send + Sync {
    fn event_id(&self) -> u64;
    fn phase(&self) -> Phase;
    /// Where the event stands (`events/stage.rs`), which the rest follows.
    fn stage(&self) -> Stage;
    fn is_running(&self) -> bool {
        self.stage() == Stage::Running
    }
    fn is_abandoned(&self) -> bool {
        self.stage() == Stage::Abandoned
    }
    /// The error a call on an event that has ended raises.
    fn ended_error(&self, py: Python<'_>) -> PyErr {
        ended_error(py, self.stage(), self.event_id())
    }
    /// Sends a terminal call and ends the event; `Err` when it cannot.
    fn terminal(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<()>;
    /// One PDK call: Kong's answer, or an awaitable of it.
    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

impl PdkTarget for EventCtx {
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
        if EventCtx::terminal(self, method, args) {
            Ok(())
        } else {
            Err(self.ended_error(py))
        }
    }
    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.make_call(py, method, args)
    }
}
