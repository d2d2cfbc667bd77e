//! The thread model's fast path: while a handler's thread waits for Kong's
//! answer to a PDK call, it reads the connection that carried its last RPC
//! itself (the connection's reading is lent to it, see `route.rs`). With
//! Kong's keep-alive pool the next Step usually comes on that connection, and
//! answering it on the handler's own thread saves two thread wake-ups per PDK
//! call. Anything else on that connection (another event's RPC) makes the
//! handler give the connection back, bytes intact, to its I/O task; a Step
//! that comes on another connection rings the thread's wake-up descriptor.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::link::{EventLink, LinkError};
use super::registry::{step_answer, Answer, Resume};
use super::route::{Lend, Route};
use crate::rpc;
use crate::wake::Wake;
use crate::wire::FrameDecoder;
use crate::writer::ConnWriter;

impl EventLink {
    /// Sends a PDK call and waits for Kong's answer on this (blocking) thread,
    /// reading the borrowed connection directly when there is one.
    pub fn call_blocking(&self, method: &str, args: &[u8]) -> Result<Resume, LinkError> {
        let wake = Wake::for_this_thread();
        let (resumed, lent) = self.send(method, args, wake.clone())?;
        match (lent, wake) {
            (Some((writer, lend)), Some(wake)) => self.wait_lent(resumed, writer, lend, &wake),
            _ => resumed.blocking_recv().map_err(|_| LinkError::Unreachable),
        }
    }

    /// Waits for this event's Step on the lent connection, or for a resume
    /// (a Step on another connection, or the event dropped) rung on `wake`.
    fn wait_lent(
        &self,
        mut resumed: oneshot::Receiver<Resume>,
        writer: Arc<ConnWriter>,
        mut lend: Lend,
        wake: &Wake,
    ) -> Result<Resume, LinkError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            wake.clear();
            match resumed.try_recv() {
                Ok(resume) => return Ok(resume),
                Err(oneshot::error::TryRecvError::Closed) => return Err(LinkError::Unreachable),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let Some(decoder) = lend.decoder.as_mut() else {
                break;
            };
            match own_step(self.event_id, decoder) {
                Own::Mine(answer, msgid, len) => {
                    // Ours: answered on this thread, the connection stays lent.
                    let Some(mut parked) = self.events.take(self.event_id) else {
                        break; // expired just now: let the I/O task answer it
                    };
                    decoder.consume(len);
                    parked.wake = None; // answered here: nobody to wake
                    drop(parked);
                    return Ok(Resume {
                        answer,
                        route: Route {
                            writer,
                            msgid,
                            lend: Some(lend),
                        },
                    });
                }
                Own::Other => break,
                Own::Incomplete => {}
            }
            let ready = crate::writer::poll(
                &[
                    (writer.raw_fd(), libc::POLLIN),
                    (wake.raw_fd(), libc::POLLIN),
                ],
                1000,
            )
            .map_err(|_| LinkError::Unreachable)?;
            if ready.contains(&writer.raw_fd()) {
                match writer.read_nonblocking(&mut chunk) {
                    Ok(0) => break, // closed: the I/O task will see it too
                    Ok(n) => decoder.extend(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
        // Give the connection back and wait for our Step elsewhere.
        drop(lend);
        resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
    }
}

enum Own {
    Mine(Answer, u64, usize),
    Other,
    Incomplete,
}

/// Whether the next whole frame on a lent connection is the Step of event
/// `event_id`.
fn own_step(event_id: u64, decoder: &FrameDecoder) -> Own {
    let (frame, len) = match decoder.peek_frame() {
        Ok(Some(found)) => found,
        Ok(None) => return Own::Incomplete,
        // A bad frame is the I/O task's to answer.
        Err(_) => return Own::Other,
    };
    let Ok(req) = rpc::parse_request(frame) else {
        return Own::Other;
    };
    let Ok(rpc::Method::Step { error }) = rpc::Method::parse(&req.method) else {
        return Own::Other;
    };
    match rpc::StepArgs::parse(req.params.first()) {
        Ok(step) if step.event_id == event_id => {
            Own::Mine(step_answer(step.data, error), req.msgid, len)
        }
        _ => Own::Other,
    }
}
