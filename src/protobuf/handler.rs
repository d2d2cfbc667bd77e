//! One HandleEvent on ProtoBuf:1, run on the connection's own thread: the
//! handler's PDK calls go out and come back on this connection, then the
//! empty method name and the `RpcReturn` end the event.
//!
//! A handler that raises fails the event closed as on MessagePack:1 (the
//! reason to Kong's error log through `kong.log.err`, then a 500 where Kong
//! can still respond), and the connection is served on: Kong retries a
//! closed connection without end. Only an unknown instance closes it: that
//! is how Kong learns to start the instance again (it looks for "closed").
//!
//! With `--handler-timeout` each handler is watched while it runs; one that
//! holds Kong's request past the limit has its event taken from it
//! (`timeout.rs`), and its thread, once the handler returns, leaves the
//! connection to the thread that took it.

use std::sync::Arc;

use prost::Message;
use pyo3::prelude::*;
use rmpv::Value;

use super::conn::Conn;
use super::event::{Command, PbEvent};
use super::messages::{CmdHandleEvent, RpcReturn};
use super::shared::Shared;
use crate::executor::report_for;
use crate::pdk::PdkProxy;
use crate::phase::Phase;
use crate::rpc::map;
use crate::rpc_error::RpcError;
use crate::service::AcceptedEvent;

/// What the connection does after an event.
pub enum After {
    ServeOn,
    Close,
}

/// The body of a 500 that fails an event closed (Kong's own wording for it).
const ERROR_BODY: &str = r#"{"message":"An unexpected error occurred"}"#;

/// Runs one event; `looper` is the connection's asyncio loop, made on its
/// first `async def` handler.
pub fn handle_event(
    shared: &Shared,
    conn: &Arc<Conn>,
    looper: &mut Option<Py<PyAny>>,
    sequence: i64,
    cmd: &CmdHandleEvent,
) -> After {
    let Some(long) = shared.ids.long(cmd.instance_id) else {
        return unknown_instance(cmd.instance_id);
    };
    let event = match shared.service.accept_event(long, &cmd.event_name) {
        Ok(event) => event,
        Err(RpcError::NoInstance(_)) => {
            shared.ids.forget(cmd.instance_id);
            return unknown_instance(cmd.instance_id);
        }
        Err(RpcError::HandedOver) => {
            // A newer server took the socket path: Kong, seeing the
            // connection closed, starts the instance again on a new one,
            // which reaches the newer server.
            log::info!("HandleEvent passed on: closing the connection for the newer server");
            return After::Close;
        }
        Err(e) => {
            // Draining, or a phase the plugin lacks: no handler runs, and
            // the event fails closed rather than letting the request by.
            log::log!(e.log_level(), "HandleEvent: {e}");
            let phase = Phase::parse(&cmd.event_name).unwrap_or(Phase::Log);
            let command = Command {
                sequence,
                label: Arc::from(cmd.event_name.as_str()),
            };
            return end_failed(
                shared,
                conn,
                0,
                phase,
                command,
                &format!("event not run: {e}"),
            );
        }
    };
    let _running = shared.exec.running_guard();
    let plugin = event.instance.instance().name.clone();
    let lua_style = shared.exec.classes.lua_style(&plugin);
    let ran = Python::try_attach(|py| run(py, shared, conn, looper, sequence, event, lua_style));
    match ran {
        Some(ctx) => finish(conn, &ctx),
        None => {
            log::warn!("event dropped: the Python interpreter is shutting down");
            let _ = conn.end_event(&end_of(sequence));
            After::Close
        }
    }
}

/// The `RpcReturn` that ends the HandleEvent of `sequence`.
fn end_of(sequence: i64) -> Vec<u8> {
    RpcReturn {
        sequence,
        r#return: None,
    }
    .encode_to_vec()
}

/// Ends on `conn`, failed closed with `message`, an event no handler
/// answers for: one refused, or taken from a handler past
/// `--handler-timeout` (`timeout.rs`).
pub fn end_failed(
    shared: &Shared,
    conn: &Arc<Conn>,
    event_id: u64,
    phase: Phase,
    command: Command,
    message: &str,
) -> After {
    let ctx = PbEvent::new(
        event_id,
        phase,
        command,
        true,
        false,
        Arc::clone(conn),
        reply_timeout(shared),
    );
    fail_closed(&ctx, message);
    finish(conn, &ctx)
}

fn reply_timeout(shared: &Shared) -> std::time::Duration {
    shared.service.settings.event_timeout
}

fn unknown_instance(short: i32) -> After {
    log::info!(
        "no plugin instance #{short}: closing the connection so that Kong starts the instance again"
    );
    After::Close
}

/// Writes the event's end unless the connection broke meanwhile, or the
/// event was taken from its handler (whoever took it ended it and serves
/// the connection on: this thread leaves it).
fn finish(conn: &Conn, ctx: &PbEvent) -> After {
    ctx.finish();
    if ctx.is_broken() {
        return After::Close;
    }
    match conn.end_event(&end_of(ctx.command.sequence)) {
        Ok(()) => After::ServeOn,
        Err(e) => {
            log::debug!("event {}: ending it failed: {e}", ctx.event_id);
            After::Close
        }
    }
}

/// Calls the handler with a `kong` object bound to this event.
fn run(
    py: Python<'_>,
    shared: &Shared,
    conn: &Arc<Conn>,
    looper: &mut Option<Py<PyAny>>,
    sequence: i64,
    event: AcceptedEvent,
    lua_style: bool,
) -> Arc<PbEvent> {
    let AcceptedEvent {
        id,
        phase,
        instance,
        label,
        ..
    } = event;
    let command = || Command {
        sequence,
        label: Arc::clone(&label),
    };
    let plugin = instance.instance().name.clone();
    let outcome = instance.instance().handle.object(py).and_then(|obj| {
        let method = obj.getattr(phase.name())?;
        let is_async = py
            .import("inspect")?
            .call_method1("iscoroutinefunction", (&method,))?
            .is_truthy()?;
        let ctx = Arc::new(PbEvent::new(
            id,
            phase,
            command(),
            lua_style,
            is_async,
            Arc::clone(conn),
            reply_timeout(shared),
        ));
        let kong = Bound::new(py, PdkProxy::root(Arc::clone(&ctx)))?;
        if let Some(w) = &shared.watched {
            w.watch(&ctx, phase);
        }
        let result = method.call1((kong,)).and_then(|r| {
            if is_async {
                run_coroutine(py, looper, r)
            } else {
                Ok(r)
            }
        });
        // From here the event's ending is this thread's, unless the
        // watchdog took the event before.
        ctx.release();
        if let Some(w) = &shared.watched {
            w.unwatch(ctx.event_id);
        }
        Ok((ctx, result))
    });
    let (ctx, result) = match outcome {
        Ok(pair) => pair,
        Err(e) => {
            // The instance's object or its phase method is missing.
            let ctx = PbEvent::new(
                id,
                phase,
                command(),
                lua_style,
                false,
                Arc::clone(conn),
                reply_timeout(shared),
            );
            (Arc::new(ctx), Err(e))
        }
    };
    if let Err(e) = result {
        if let Some(message) = report_for(py, &*ctx, phase, &plugin, &e) {
            py.detach(|| fail_closed(&ctx, &message));
        }
    }
    drop(instance);
    ctx
}

/// Runs an `async def` handler's coroutine to its end on the connection's
/// own asyncio loop (its PDK calls are answered at once: `ready.rs`).
fn run_coroutine<'py>(
    py: Python<'py>,
    looper: &mut Option<Py<PyAny>>,
    coroutine: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let event_loop = match looper {
        Some(l) => l.bind(py).clone(),
        None => {
            let l = py.import("asyncio")?.call_method0("new_event_loop")?;
            *looper = Some(l.clone().unbind());
            l
        }
    };
    event_loop.call_method1("run_until_complete", (coroutine,))
}

/// `kong.log.err(message)`, then a 500 where Kong can still respond.
fn fail_closed(ctx: &PbEvent, message: &str) {
    let mut args = Vec::new();
    let _ = rmpv::encode::write_value(&mut args, &Value::Array(vec![Value::from(message)]));
    if !ctx.ask_quietly("kong.log.err", &args) || !ctx.phase.can_respond() {
        return;
    }
    let exit = Value::Array(vec![
        Value::from(500),
        Value::from(ERROR_BODY),
        map(vec![(
            "Content-Type",
            Value::from("application/json; charset=utf-8"),
        )]),
    ]);
    let mut args = Vec::new();
    let _ = rmpv::encode::write_value(&mut args, &exit);
    ctx.ask_quietly("kong.response.exit", &args);
}
