//! A connection's thread: reads Kong's `RpcCall`s one after the other and
//! answers each, running HandleEvents itself (`handler.rs`).

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use pyo3::prelude::*;

use super::commands::{answer, Answered};
use super::conn::Conn;
use super::frame::FrameError;
use super::handler::{handle_event, After};
use super::messages::rpc_call::Call;
use super::messages::rpc_return::Return;
use super::messages::{RpcCall, RpcReturn};
use super::shared::Shared;

/// Serves one connection until Kong closes it or the server stops.
pub fn serve_connection(shared: Arc<Shared>, stream: UnixStream) {
    match Conn::new(stream, shared.max_frame, Arc::clone(&shared.stop)) {
        Ok(conn) => serve_on(shared, Arc::new(conn)),
        Err(e) => log::warn!("ProtoBuf:1 connection not served: {e}"),
    }
}

/// Serves a connection from here on: a new one, or one taken from a
/// handler past `--handler-timeout` (`timeout.rs`; the stuck handler's
/// thread leaves it, and counts it until then).
pub fn serve_on(shared: Arc<Shared>, conn: Arc<Conn>) {
    shared.service.connections.fetch_add(1, Ordering::AcqRel);
    serve(&shared, &conn);
    shared.service.connections.fetch_sub(1, Ordering::AcqRel);
}

fn serve(shared: &Shared, conn: &Arc<Conn>) {
    // The connection's asyncio loop, for `async def` handlers.
    let mut looper: Option<Py<PyAny>> = None;
    loop {
        // A newer server took the socket path (`--reload`, a Kong reload):
        // an idle connection closes, and Kong's pool drops it, so that
        // Kong's next connection reaches the newer server.
        let frame = match conn.next_call(&|| shared.service.is_replaced()) {
            Ok(frame) => frame,
            Err(FrameError::Closed | FrameError::GaveUp) => break,
            Err(e) => {
                log::warn!("ProtoBuf:1 connection closed: {e}");
                break;
            }
        };
        shared.service.note_request();
        let call = match RpcCall::decode(frame.as_slice()) {
            Ok(call) => call,
            Err(e) => {
                // No sequence to echo: Kong fails that request, and the
                // connection is served on.
                log::warn!(
                    "a frame that is not an RpcCall ({} bytes): {e}",
                    frame.len()
                );
                if reply(conn, 0, None).is_err() {
                    break;
                }
                continue;
            }
        };
        let sequence = call.sequence;
        let after = match call.call {
            Some(Call::CmdHandleEvent(cmd)) => {
                handle_event(shared, conn, &mut looper, sequence, &cmd)
            }
            Some(cmd) => match answer(shared, cmd) {
                Answered::Return(ret) => reply_or_close(conn, sequence, ret),
                Answered::Failed => reply_or_close(conn, sequence, None),
                Answered::HandedOver => After::Close,
            },
            None => {
                log::warn!("an RpcCall without a command (sequence {sequence})");
                reply_or_close(conn, sequence, None)
            }
        };
        if matches!(after, After::Close) {
            break;
        }
    }
    if let Some(l) = looper {
        Python::try_attach(|py| {
            let _ = l.bind(py).call_method0("close");
        });
    }
}

fn reply(conn: &Conn, sequence: i64, ret: Option<Return>) -> Result<(), FrameError> {
    let msg = RpcReturn {
        sequence,
        r#return: ret,
    };
    conn.reply(&msg.encode_to_vec())
}

fn reply_or_close(conn: &Conn, sequence: i64, ret: Option<Return>) -> After {
    match reply(conn, sequence, ret) {
        Ok(()) => After::ServeOn,
        Err(_) => After::Close,
    }
}
