//! Serving one request of the looped model, on the loop's thread.
//!
//! `HandleEvent` starts the handler on the loop and leaves the reply to it;
//! `Step` resumes the event it names, whichever connection it came on;
//! `AbandonEvent` (from the worker-process core) ends one; every other method
//! is answered here and now by the service. Every request gets exactly one
//! reply, with the msgid it came with; errors are RPC errors.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyString;
use rmpv::Value;

use super::conns::Incoming;
use super::event::{LoopedEvent, LoopedEventHandle, Route, Stepped};
use super::Core;
use crate::events::step_answer;
use crate::handover::{self, Hop};
use crate::pdk::PdkProxy;
use crate::rpc::{self, as_map, as_u64, field, parse_request, Method};
use crate::rpc_error::RpcError;
use crate::service::Encoded;

pub fn handle(core: &Arc<Core>, py: Python<'_>, conn: u64, incoming: Incoming) {
    core.service.note_request();
    let frame = match incoming {
        Incoming::Frame(frame) => frame,
        Incoming::Bad(msgid, e) => return reply_error(core, py, conn, &msgid, "", e.to_string()),
    };
    let req = match parse_request(frame) {
        Ok(req) => req,
        Err((msgid, e)) => return reply_error(core, py, conn, &msgid, "", e),
    };
    let hop = Hop::of(&req);
    if let (Some(successor), Hop::Kong) = (core.service.successor(), hop) {
        if !handover::served_here(&req, |id| core.events.get(id).is_some()) {
            // Blocking: this loop runs only the old server's own events now.
            let out = py.detach(|| core.forward(conn, successor, &req));
            core.send(py, conn, &out);
            return;
        }
    }
    let route = Route {
        conn,
        msgid: req.msgid,
    };
    let first = req.params.first().unwrap_or(&Value::Nil);
    let outcome =
        Method::parse(&req.method)
            .map_err(RpcError::from)
            .and_then(|method| match method {
                Method::HandleEvent => start_event(core, py, first, route),
                Method::Step { error } => step(core, py, first, error, route),
                Method::AbandonEvent => abandon_event(core, py, first),
                other => core.service.answer_now(other, first).unwrap_or_else(|| {
                    Err(format!("method {} not served here", req.method).into())
                }),
            });
    if let (Err(e), Some(successor)) = (&outcome, core.service.successor()) {
        if *e == RpcError::HandedOver {
            // Draining began after the check above: passed on all the same.
            let out = py.detach(|| core.forward(conn, successor, &req));
            core.send(py, conn, &out);
            return;
        }
    }
    // A Step of an event of the server this one replaced, sent on a new
    // connection: passed back to it.
    if let (Err(RpcError::UnknownEvent(_)), Some(older), false) =
        (&outcome, core.service.predecessor(), hop == Hop::FromOlder)
    {
        if let Some(out) = py.detach(|| core.pass_back(conn, older, &req)) {
            core.send(py, conn, &out);
            return;
        }
    }
    match outcome {
        Ok(Encoded::Value(v)) => {
            let mut out = Vec::with_capacity(64);
            rpc::write_ok(&mut out, req.msgid, &v);
            core.send(py, conn, &out);
        }
        Ok(Encoded::Deferred) => {}
        Err(e) => reply_error(core, py, conn, &Value::from(req.msgid), &req.method, e),
    }
}

fn reply_error(
    core: &Core,
    py: Python<'_>,
    conn: u64,
    msgid: &Value,
    method: &str,
    e: impl Into<RpcError>,
) {
    let e = e.into();
    let level = e.log_level();
    if method.is_empty() {
        log::log!(level, "{e}");
    } else {
        log::log!(level, "{method}: {e}");
    }
    let mut out = Vec::with_capacity(64);
    rpc::write_error_raw(&mut out, msgid, &e.to_string());
    core.send(py, conn, &out);
}

fn start_event(
    core: &Arc<Core>,
    py: Python<'_>,
    arg: &Value,
    route: Route,
) -> Result<Encoded, RpcError> {
    let accepted = core.service.accept_event(arg)?;
    let plugin = accepted
        .instance
        .instance()
        .handle
        .object(py)
        .map_err(|e| crate::executor::describe(py, &e))?;
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
    core.events.insert(Arc::clone(&event));
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
    Ok(Encoded::Deferred)
}

fn event_id(arg: &Value, what: &str) -> Result<u64, String> {
    as_map(arg)
        .and_then(|m| field(m, "EventId"))
        .and_then(as_u64)
        .ok_or_else(|| format!("{what} expects an integer EventId"))
}

fn step(
    core: &Arc<Core>,
    py: Python<'_>,
    arg: &Value,
    is_error: bool,
    route: Route,
) -> Result<Encoded, RpcError> {
    let rpc::StepArgs { event_id: id, data } = rpc::StepArgs::parse(Some(arg))?;
    let event = core.events.get(id).ok_or(RpcError::UnknownEvent(id))?;
    match event.step(route)? {
        Stepped::Ret => Ok(Encoded::Value(rpc::map(vec![
            ("Data", Value::from("ret")),
            ("EventId", Value::from(id)),
        ]))),
        Stepped::Call { method, args } => Ok(Encoded::Value(rpc::map(vec![
            (
                "Data",
                rpc::map(vec![
                    ("Method", Value::from(method)),
                    ("Args", Value::Array(args)),
                ]),
            ),
            ("EventId", Value::from(id)),
        ]))),
        Stepped::Resume(token) => {
            let answer = event.answer(py, step_answer(data, is_error));
            core.resolve(py, token.bind(py), answer);
            Ok(Encoded::Deferred)
        }
    }
}

/// Ends a parked event as the deadline does (sent by the worker-process core
/// when Kong abandoned the event there).
fn abandon_event(core: &Arc<Core>, py: Python<'_>, arg: &Value) -> Result<Encoded, RpcError> {
    let id = event_id(arg, "AbandonEvent")?;
    let event = core.events.get(id).ok_or(RpcError::UnknownEvent(id))?;
    log::info!("event {id} abandoned by the core process");
    event.abandon(py, "abandoned by the core process");
    Ok(Encoded::Value(Value::from("ok")))
}
