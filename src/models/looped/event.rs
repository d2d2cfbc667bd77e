//! One event of the looped model, and the registry of events in flight.
//!
//! Everything here runs on the loop's thread. A PDK call writes its request
//! to Kong as the reply to the RPC in flight (the event's [`Route`]), keeps
//! the loop's token (an asyncio future, a gevent waiter) and hands it to the
//! handler to wait on. The Step that answers it, on whichever connection it
//! comes (Kong's pool, docs/protocol.md §2), finds the event here by its id,
//! takes the token and resolves it, which resumes the handler on this same
//! thread. One call at a time per event: Kong's protocol has room for one
//! answer in flight, so a second concurrent call fails at once and Kong's
//! side never sees it.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::Core;
use crate::events::fail_closed::{log_err, timed_out_message, OnStep, Pending};
use crate::events::{self, Answer, Stage};
use crate::executor::{report_for, PluginHandle};
use crate::instances::InFlight;
use crate::pdk::{answer_to_py, concurrent_call_error, event_abandoned, PdkTarget};
use crate::phase::Phase;
use crate::rpc;

/// Where the reply to the RPC in flight goes: a connection and Kong's msgid.
#[derive(Clone, Copy)]
pub struct Route {
    pub conn: u64,
    pub msgid: u64,
}

struct State {
    stage: Stage,
    route: Option<Route>,
    /// The PDK call waiting for Kong's Step: the handler's (the loop's
    /// token: an asyncio future, a gevent waiter), or the log of the event
    /// failing closed.
    pending: Option<Pending<Py<PyAny>>>,
    /// The handler raised while a call was pending: what to send to Kong's
    /// error log once that call's Step comes.
    failing: Option<String>,
    /// When the handler last got Kong's request (the event started, or a
    /// Step resumed it) or, with `pending`, when that call went out: what
    /// `--handler-timeout` and the event deadline measure from.
    since: Instant,
    handler_done: bool,
    instance: Option<InFlight<PluginHandle>>,
}

pub struct LoopedEvent {
    pub id: u64,
    phase: Phase,
    pub label: Arc<str>,
    /// The error style of the instance's plugin.
    lua_style: bool,
    /// `--handler-timeout`.
    handler_timeout: Option<Duration>,
    core: Weak<Core>,
    state: Mutex<State>,
}

/// The events in flight, by id: every one, not only those waiting for a
/// Step, for the loop's timeouts and `GetStatus`.
pub type Registry = events::Registry<Arc<LoopedEvent>>;

/// Events in flight: (waiting for Kong, total).
pub fn counts(events: &Registry) -> (usize, usize) {
    (events.count(|e| e.is_waiting()), events.len())
}

/// Events whose handler has held Kong's request for `limit` without a PDK
/// call or a return (`--handler-timeout`).
pub fn overran(events: &Registry, limit: Duration) -> Vec<Arc<LoopedEvent>> {
    events.filter(|e| e.lock().overran(limit))
}

/// Events whose PDK call has waited longer than `deadline` for Kong.
pub fn stale(events: &Registry, deadline: Duration) -> Vec<Arc<LoopedEvent>> {
    events.filter(|e| {
        let s = e.lock();
        s.pending.is_some() && s.since.elapsed() >= deadline
    })
}

impl State {
    /// The handler has held Kong's request (the RPC in flight) for `limit`.
    fn overran(&self, limit: Duration) -> bool {
        self.stage == Stage::Running
            && self.pending.is_none()
            && self.route.is_some()
            && self.since.elapsed() >= limit
    }
}

impl LoopedEvent {
    pub fn new(
        id: u64,
        phase: Phase,
        label: Arc<str>,
        core: &Arc<Core>,
        route: Route,
        instance: InFlight<PluginHandle>,
    ) -> Self {
        let lua_style = core.plugins.lua_style(&instance.instance().name);
        LoopedEvent {
            id,
            phase,
            label,
            lua_style,
            handler_timeout: core.handler_timeout,
            core: Arc::downgrade(core),
            state: Mutex::new(State {
                stage: Stage::Running,
                route: Some(route),
                pending: None,
                failing: None,
                since: Instant::now(),
                handler_done: false,
                instance: Some(instance),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_waiting(&self) -> bool {
        self.lock().pending.is_some()
    }

    fn core(&self) -> Option<Arc<Core>> {
        self.core.upgrade()
    }

    /// Sends one reply on `route`; false when it cannot reach Kong.
    fn send(&self, py: Python<'_>, route: Route, result: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Some(core) = self.core() else {
            return false;
        };
        let mut out = Vec::with_capacity(64);
        rpc::write_ok_prefix(&mut out, route.msgid);
        result(&mut out);
        core.send(py, route.conn, &out)
    }

    fn send_ret(&self, py: Python<'_>, route: Route) -> bool {
        let id = self.id;
        self.send(py, route, |out| rpc::write_ret(out, id))
    }

    /// The handler ended (however it ended): Kong gets "ret" unless the
    /// event already ended, and the event leaves the registry once nothing
    /// is owed to Kong.
    pub fn finish(&self, py: Python<'_>) {
        // A handler that returns past the deadline is failed closed, as the
        // thread model's watchdog would have done while it ran.
        self.time_out(py);
        let (route, instance, remove) = {
            let mut s = self.lock();
            s.handler_done = true;
            let mut route = None;
            // A call still pending (never awaited): its Step gets "ret".
            if s.stage.leave(Stage::Finished) && s.pending.is_none() {
                route = s.route.take();
            }
            (route, s.instance.take(), s.pending.is_none())
        };
        if let Some(route) = route {
            self.send_ret(py, route);
        }
        drop(instance);
        if remove {
            self.forget();
        }
    }

    fn forget(&self) {
        if let Some(core) = self.core() {
            drop(core.events.take(self.id));
        }
    }

    /// Kong's Step for this event arrived on `route`: the handler's token to
    /// resolve, or how the Step is answered as the event ends.
    pub fn step(&self, route: Route) -> Result<OnStep<Py<PyAny>>, String> {
        let mut s = self.lock();
        let Some(pending) = s.pending.take() else {
            return Err(format!(
                "event {} is not waiting for a Step (no PDK call in flight)",
                self.id
            ));
        };
        let stepped = match pending.on_step() {
            OnStep::Resume(token) if !s.handler_done => {
                s.route = Some(route);
                s.since = Instant::now();
                return Ok(OnStep::Resume(token));
            }
            // The handler raised while this call was pending: now the event
            // can fail closed.
            OnStep::Resume(_) if s.failing.is_some() => {
                let message = s.failing.take().unwrap_or_default();
                s.pending = Some(Pending::FailClosed(self.phase));
                s.since = Instant::now();
                return Ok(OnStep::End(Some(log_err(&message))));
            }
            // The handler returned without awaiting its call.
            OnStep::Resume(_) => OnStep::End(None),
            end @ OnStep::End(_) => end,
        };
        drop(s);
        self.forget();
        Ok(stepped)
    }

    /// The handler raised: Kong's error log gets `message` through
    /// `kong.log.err`, then, where Kong can still respond, the request ends
    /// with a 500: the sequence of `events/fail_closed.rs`, walked on the
    /// loop's own thread.
    pub fn fail_closed(&self, py: Python<'_>, message: String) {
        let (route, instance) = {
            let mut s = self.lock();
            if !s.stage.leave(Stage::Finished) {
                drop(s);
                return self.finish(py);
            }
            s.handler_done = true;
            let instance = s.instance.take();
            if s.pending.is_some() {
                // Continued by that call's Step.
                s.failing = Some(message);
                (None, instance)
            } else {
                let route = s.route.take();
                if route.is_some() {
                    s.pending = Some(Pending::FailClosed(self.phase));
                    s.since = Instant::now();
                }
                (route.map(|r| (r, message)), instance)
            }
        };
        drop(instance);
        if let Some((route, message)) = route {
            self.send_log_err(py, route, message);
        }
    }

    /// `--handler-timeout`: when the handler has held Kong's request past the
    /// limit, the event is taken from it and fails closed (`kong.log.err`
    /// now, the 500 on its Step), as the thread model's watchdog does
    /// (`models/threads/watchdog.rs`); the handler's later PDK calls raise
    /// `EventAbandoned`. Run on the loop's thread, whenever the handler
    /// yields (a PDK call, its return) and on each tick (a handler awaiting
    /// something else); a handler that blocks the loop is caught when it
    /// yields. True when the event was timed out now.
    pub fn time_out(&self, py: Python<'_>) -> bool {
        let Some(limit) = self.handler_timeout else {
            return false;
        };
        let route = {
            let mut s = self.lock();
            if !s.overran(limit) {
                return false;
            }
            // Abandoned: the handler's next PDK call raises EventAbandoned.
            s.stage.leave(Stage::Abandoned);
            s.pending = Some(Pending::FailClosed(self.phase));
            s.since = Instant::now();
            s.route.take()
        };
        let message = timed_out_message(&self.label, limit);
        log::error!("event {}: {message}", self.id);
        if let Some(route) = route {
            self.send_log_err(py, route, message);
        }
        true
    }

    /// Sends `kong.log.err(message)` as the reply on `route`; its Step
    /// (`Pending::FailClosed`, already set) ends the event.
    fn send_log_err(&self, py: Python<'_>, route: Route, message: String) {
        let call = log_err(&message);
        let id = self.id;
        let sent = self.send(py, route, |out| {
            rpc::write_call_result(out, id, call.method, &call.args)
        });
        if !sent {
            self.lock().pending = None;
            self.forget();
        }
    }

    /// Kong's answer, as the handler sees it.
    pub fn answer<'py>(&self, py: Python<'py>, answer: Answer) -> PyResult<Bound<'py, PyAny>> {
        answer_to_py(py, answer, self.lua_style)
    }

    /// Kong will not answer (deadline, AbandonEvent, shutdown): the pending
    /// call, if any, raises `EventAbandoned` in the handler.
    pub fn abandon(&self, py: Python<'_>, why: &str) {
        let (token, remove) = {
            let mut s = self.lock();
            s.stage.leave(Stage::Abandoned);
            s.route = None;
            let token = match s.pending.take() {
                Some(Pending::Handler(token)) => Some(token),
                _ => None,
            };
            (token, s.handler_done)
        };
        if remove {
            self.forget();
        }
        if let (Some(token), Some(core)) = (token, self.core()) {
            let err = event_abandoned(py, format!("event {} was abandoned: {why}", self.id));
            core.resolve(py, token.bind(py), Err(err));
        }
    }
}

impl PdkTarget for LoopedEvent {
    fn event_id(&self) -> u64 {
        self.id
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    fn stage(&self) -> Stage {
        self.lock().stage
    }

    fn terminal(&self, py: Python<'_>, method: Arc<str>, args: Vec<u8>) -> PyResult<()> {
        if self.time_out(py) {
            return Err(self.ended_error(py));
        }
        let route = {
            let mut s = self.lock();
            if s.stage != Stage::Running {
                drop(s);
                return Err(self.ended_error(py));
            }
            if s.pending.is_some() {
                drop(s);
                return Err(concurrent_call_error(&method));
            }
            s.stage.leave(Stage::Exited);
            s.route.take()
        };
        if let Some(route) = route {
            self.send(py, route, |out| {
                rpc::write_call_result(out, self.id, &method, &args)
            });
        }
        Ok(())
    }

    fn call<'py>(
        self: Arc<Self>,
        py: Python<'py>,
        method: Arc<str>,
        args: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(core) = self.core() else {
            return Err(self.ended_error(py));
        };
        if self.time_out(py) {
            return Err(self.ended_error(py));
        }
        let token = core.tokens.new_token(py)?;
        let route = {
            let mut s = self.lock();
            if s.stage != Stage::Running {
                drop(s);
                return Err(self.ended_error(py));
            }
            if s.pending.is_some() {
                drop(s);
                // A failed awaitable, not a raise at call time: a handler
                // that gathers two calls gets the error where it awaits, and
                // still awaits the call that went out.
                core.resolve(py, &token, Err(concurrent_call_error(&method)));
                return core.tokens.wait(token);
            }
            let Some(route) = s.route.take() else {
                drop(s);
                return Err(self.ended_error(py));
            };
            // Pending before the write: the Step may be read right after.
            s.pending = Some(Pending::Handler(token.clone().unbind()));
            s.since = Instant::now();
            route
        };
        let sent = self.send(py, route, |out| {
            rpc::write_call_result(out, self.id, &method, &args)
        });
        if !sent {
            {
                let mut s = self.lock();
                s.pending = None;
                s.stage.leave(Stage::Abandoned);
            }
            return Err(self.ended_error(py));
        }
        core.tokens.wait(token)
    }
}

/// The handler's view of its event, for the runner's driver code
/// (`kong_pdk/runners.py`).
#[pyclass(frozen, module = "kong_pdk._core")]
pub struct LoopedEventHandle {
    pub event: Arc<LoopedEvent>,
    pub plugin_name: String,
}

/// The stall watchdog's name for a `LoopedEventHandle` (`watchdog.rs`).
pub fn name_handle(handle: &Bound<'_, PyAny>) -> Option<String> {
    let event = &handle.cast::<LoopedEventHandle>().ok()?.get().event;
    Some(format!("event {}: {} handler", event.id, event.label))
}

#[pymethods]
impl LoopedEventHandle {
    /// The handler is done: Kong gets "ret" unless the event already ended.
    fn finish(&self, py: Python<'_>) {
        self.event.finish(py);
    }

    /// The handler raised `exc`: logs it, and unless it was the unwinding of
    /// `kong.response.exit` or of an abandoned event, fails the event closed;
    /// otherwise as `finish`.
    fn fail(&self, py: Python<'_>, exc: Bound<'_, PyAny>) {
        // Past --handler-timeout, Kong gets the timeout (as from the thread
        // model's watchdog); the exception is then only logged.
        self.event.time_out(py);
        let err = PyErr::from_value(exc);
        let message = report_for(
            py,
            self.event.as_ref(),
            self.event.phase,
            &self.plugin_name,
            &err,
        );
        match message {
            Some(message) => self.event.fail_closed(py, message),
            None => self.event.finish(py),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event's state whose handler got Kong's request `ago`.
    fn state(ago: Duration) -> State {
        State {
            stage: Stage::Running,
            route: Some(Route { conn: 1, msgid: 2 }),
            pending: None,
            failing: None,
            since: Instant::now()
                .checked_sub(ago)
                .expect("an instant in the past"),
            handler_done: false,
            instance: None,
        }
    }

    #[test]
    fn a_handler_that_held_kongs_request_past_the_limit_overran() {
        assert!(state(Duration::from_secs(3)).overran(Duration::from_secs(2)));
        assert!(!state(Duration::from_secs(1)).overran(Duration::from_secs(2)));
    }

    #[test]
    fn a_handler_waiting_for_kong_or_without_a_request_did_not_overrun() {
        let limit = Duration::from_secs(2);
        // Its PDK call waits for Kong: the event deadline's business.
        let mut waiting = state(Duration::from_secs(3));
        waiting.pending = Some(Pending::FailClosed(Phase::Access));
        assert!(!waiting.overran(limit));
        // No RPC in flight to answer.
        let mut no_route = state(Duration::from_secs(3));
        no_route.route = None;
        assert!(!no_route.overran(limit));
        // Already ended.
        for stage in [Stage::Exited, Stage::Abandoned, Stage::Finished] {
            let mut ended = state(Duration::from_secs(3));
            ended.stage = stage;
            assert!(!ended.overran(limit), "{stage:?}");
        }
    }
}
