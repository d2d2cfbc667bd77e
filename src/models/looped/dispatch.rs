//! Serving one request of the looped model, on the loop's thread.
//!
//! `HandleEvent` starts the handler on the loop and leaves the reply to it;
//! `Step` resumes the event it names, whichever connection it came on;
//! `AbandonEvent` (from the worker-process core) ends one; every other method
//! is answered here and now by the service. Every request gets exactly one
//! reply, with the msgid it came with; errors are RPC errors.

use std::convert::Infallible;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use rmpv::Value;

use super::conns::Incoming;
use super::event::{LoopedEvent, LoopedEventHandle, Route};
use super::Core;
use crate::dispatch::{reply_bytes, EventSide, Outcome, Stepped};
use crate::events::fail_closed::OnStep;
use crate::events::step_answer;
use crate::handover::Hop;
use crate::pdk::PdkProxy;
use crate::rpc::{self, parse_request};
use crate::rpc_error::RpcError;
use crate::service::{AcceptedEvent, Encoded};

pub fn handle(core: &Arc<Core>, py: Python<'_>, conn: u64, incoming: Incoming) {
    core.service.note_request();
    let frame = match incoming {
        Incoming::Frame(frame) => frame,
        Incoming::Bad(msgid, e) => return reply_error(core, py, conn, &msgid, e.to_string()),
    };
    let req = match parse_request(frame) {
        Ok(req) => req,
        Err(bad) => return reply_error(core, py, conn, &bad.msgid, bad.why.to_string()),
    };
    let msgid = req.msgid;
    let call = match req.call {
        Ok(call) => call,
        Err(e) => return reply_error(core, py, conn, &Value::from(msgid), e.to_string()),
    };
    let method = call.method();
    let side = Loop { core, py };
    let route = Route { conn, msgid };
    let out = match core
        .service
        .serve(&side, call, Hop::of(req.tag.as_deref()), route)
    {
        Outcome::Reply(_, reply) => reply_bytes(msgid, method, reply),
        Outcome::Deferred => return,
        Outcome::Run(never) => match never {},
        // Blocking: this loop runs only the old server's own events by
        // then, or waits for one Step of the older server's after a reload.
        Outcome::Pass(pass) if pass.hop == Hop::FromNewer => {
            match py.detach(|| core.pass_back(conn, &pass.to, &pass.call, msgid)) {
                Some(out) => out,
                None => reply_bytes(msgid, method, Err(pass.otherwise)),
            }
        }
        Outcome::Pass(pass) => py.detach(|| core.forward(conn, &pass.to, &pass.call, msgid)),
    };
    core.send(py, conn, &out);
}

/// Answers a request that could not be read.
fn reply_error(core: &Core, py: Python<'_>, conn: u64, msgid: &Value, e: String) {
    log::warn!("{e}");
    let mut out = Vec::with_capacity(64);
    rpc::write_error_raw(&mut out, msgid, &e);
    core.send(py, conn, &out);
}

/// The loop's events: started, resumed and ended on its thread, with the
/// interpreter held.
struct Loop<'a, 'py> {
    core: &'a Arc<Core>,
    py: Python<'py>,
}

impl EventSide for Loop<'_, '_> {
    type Route = Route;
    type Job = Infallible;

    /// Starts the handler on the loop; it writes the reply.
    fn start(&self, accepted: AcceptedEvent, route: Route) -> Outcome<Route, Infallible> {
        let (core, py) = (self.core, self.py);
        let plugin = match accepted.instance.instance().handle.object(py) {
            Ok(plugin) => plugin,
            Err(e) => {
                let e = RpcError::from(crate::executor::describe(py, &e));
                return Outcome::Reply(route, Err(e));
            }
        };
        let phase = accepted.phase;
        let plugin_name = accepted.instance.instance().name.clone();
        let event = Arc::new(LoopedEvent::new(
            accepted.id,
            phase,
            accepted.label,
            core,
            route,
            accepted.instance,
        ));
        core.events.insert(event.id, Arc::clone(&event));
        let started = Bound::new(py, PdkProxy::root(Arc::clone(&event))).and_then(|kong| {
            let handle = Bound::new(
                py,
                LoopedEventHandle {
                    event: Arc::clone(&event),
                    plugin_name,
                },
            )?;
            core.runner.bind(py).call_method1(
                "start",
                (plugin, PyString::new(py, phase.name()), kong, handle),
            )
        });
        if let Err(e) = started {
            // The runner itself failed: end the event so Kong gets an answer.
            log::error!(
                "event {}: could not start the handler: {}",
                event.id,
                crate::executor::describe(py, &e)
            );
            event.finish(py);
        }
        Outcome::Deferred
    }

    fn step(&self, id: u64, data: Option<Value>, error: bool, route: Route) -> Stepped<Route> {
        let Some(event) = self.core.events.get(id) else {
            return Stepped::Unknown(data, route);
        };
        let reply = match event.step(route) {
            Err(e) => Err(e.into()),
            Ok(OnStep::End(None)) => Ok(Encoded::Ret(id)),
            Ok(OnStep::End(Some(call))) => Ok(Encoded::Call { event: id, call }),
            Ok(OnStep::Resume(token)) => {
                let py = self.py;
                let answer = event.answer(py, step_answer(data, error));
                self.core.resolve(py, token.bind(py), answer);
                return Stepped::Resumed;
            }
        };
        Stepped::Reply(route, reply)
    }

    /// Ends a parked event as the deadline does (sent by the worker-process
    /// core when Kong abandoned the event there).
    fn abandon(&self, id: u64) -> Result<(), RpcError> {
        let event = self.core.events.get(id).ok_or(RpcError::UnknownEvent(id))?;
        log::info!("event {id} abandoned by the core process");
        event.abandon(self.py, "abandoned by the core process");
        Ok(())
    }

    fn has_event(&self, id: u64) -> bool {
        self.core.events.contains(id)
    }
}
