//! One socket connection: read frames, answer each request in order.
//!
//! Kong never pipelines (docs/protocol.md §2), so a connection serves one request
//! at a time. Replies are written whole, with the `serverPid` notification in
//! front of the first one (§2, "Notifications"), and nothing is ever written
//! after a reply that was not asked for (Kong would drop it).

use std::sync::Arc;

use std::os::fd::AsFd;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::events::Lend;
use crate::rpc::{self, parse_request, Method};
use crate::service::{Encoded, Service};
use crate::wire::{FrameDecoder, WireError};
use crate::writer::ConnWriter;

pub async fn serve(
    stream: UnixStream,
    service: Arc<Service>,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) {
    let writer = match ConnWriter::new(stream.as_fd()) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            log::warn!("connection dropped: cannot duplicate its descriptor: {e}");
            return;
        }
    };
    let mut stream = stream;
    let mut decoder = FrameDecoder::new(max_frame);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut greeted = false;
    loop {
        loop {
            out.clear();
            if !greeted {
                rpc::write_server_pid(&mut out, std::process::id());
            }
            let close = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    match parse_request(frame) {
                        Ok(req) => {
                            let (msgid, method) = (req.msgid, req.method.clone());
                            if !greeted {
                                // The greeting must precede a reply the handler
                                // writes from its own thread.
                                if let Err(e) = writer.write_all(&out) {
                                    // The request is still served: whatever it
                                    // starts must end cleanly on its own.
                                    log::debug!("greeting not written: {e}");
                                }
                                out.clear();
                            }
                            // A HandleEvent or Step lends the connection's
                            // reading to the event's handler (events::Lend)
                            // until it gives it back.
                            let lends = matches!(
                                Method::parse(&req.method),
                                Ok(Method::HandleEvent | Method::Step { .. })
                            );
                            let (lend, returned) = if lends {
                                let (lend, returned) = Lend::new(std::mem::replace(
                                    &mut decoder,
                                    FrameDecoder::new(max_frame),
                                ));
                                (Some(lend), Some(returned))
                            } else {
                                (None, None)
                            };
                            let reply = service.dispatch(req, &writer, lend).await;
                            if let Some(returned) = returned {
                                decoder = tokio::select! {
                                    back = returned => match back {
                                        Ok(d) => d,
                                        Err(_) => return,
                                    },
                                    _ = stop.changed() => return,
                                };
                            }
                            match reply {
                                Ok(Encoded::Value(v)) => rpc::write_ok(&mut out, msgid, &v),
                                Ok(Encoded::Deferred) => {}
                                Err(e) => {
                                    log::log!(
                                        if e.starts_with("no plugin instance") {
                                            log::Level::Info
                                        } else {
                                            log::Level::Warn
                                        },
                                        "{method}: {e}"
                                    );
                                    rpc::write_error(&mut out, msgid, &e);
                                }
                            }
                        }
                        Err((msgid, e)) => {
                            log::warn!("{e}");
                            rpc::write_error(&mut out, msgid, &e);
                        }
                    }
                    false
                }
                Err(e) => {
                    log::warn!("connection: {e}");
                    let msgid = decoder.peek_msgid().unwrap_or(0);
                    rpc::write_error(&mut out, msgid, &e.to_string());
                    decoder.reset();
                    // After an oversized frame the rest of it is still coming:
                    // there is no way to find the next frame, so hang up.
                    matches!(e, WireError::TooLarge { .. })
                }
            };
            greeted = true;
            if !out.is_empty() && writer.write_all(&out).is_err() {
                log::debug!("connection closed before the reply was written");
                return;
            }
            if close {
                return;
            }
        }
        let n = tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(n) => n,
                Err(e) => {
                    log::debug!("connection read failed: {e}");
                    return;
                }
            },
            _ = stop.changed() => return,
        };
        if n == 0 {
            // Kong's readiness probes (docs/protocol.md §1.3) connect and close.
            if !decoder.is_empty() {
                log::debug!("connection closed in the middle of a message");
            }
            return;
        }
        decoder.extend(&chunk[..n]);
    }
}
