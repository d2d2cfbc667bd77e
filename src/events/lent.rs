//! The thread model's fast path: the thread that runs a handler reads the
//! connection it was lent (see `route.rs`) itself. While the handler waits
//! for Kong's answer to a PDK call, the Step usually comes on that
//! connection (Kong's keep-alive pool hands out the connection it got back
//! last), and answering it on the handler's own thread saves two thread
//! wake-ups per PDK call. Another event's HandleEvent or Step on that
//! connection is served on this thread too (the event it starts or resumes
//! takes the connection along); anything else makes the thread give the
//! connection back, bytes intact, to its I/O task. A Step that comes on
//! another connection rings the thread's wake-up descriptor.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::link::{EventLink, LinkError};
use super::registry::{step_answer, Answer, Resume};
use super::route::{Here, Lend, Route, Served};
use crate::rpc;
use crate::wake::Wake;
use crate::wire::FrameDecoder;
use crate::writer::ConnWriter;

/// What waiting on a lent connection ended with.
pub enum Filled {
    /// New bytes were read.
    Data,
    /// The thread's wake-up descriptor rang.
    Woken,
    /// Nothing within the time limit.
    Quiet,
    /// The connection is closed or failed: give it back, its task sees it too.
    Closed,
}

impl Lend {
    /// Waits up to `timeout_ms` for bytes on the lent connection or a ring
    /// of `wake`, and reads what came.
    pub fn fill(&mut self, writer: &ConnWriter, wake: &Wake, timeout_ms: i32) -> Filled {
        thread_local! {
            // One read buffer per thread: zeroing 16 KB on every wait cost
            // more instructions than the rest of a PDK call.
            static CHUNK: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
        }
        let Ok(ready) = crate::writer::poll(
            &[
                (writer.raw_fd(), libc::POLLIN),
                (wake.raw_fd(), libc::POLLIN),
            ],
            timeout_ms,
        ) else {
            return Filled::Closed;
        };
        if ready.contains(&writer.raw_fd()) {
            let Some(decoder) = self.decoder.as_mut() else {
                return Filled::Closed;
            };
            return CHUNK.with(|chunk| {
                let mut chunk = chunk.borrow_mut();
                match writer.read_nonblocking(&mut chunk) {
                    Ok(0) => Filled::Closed,
                    Ok(n) => {
                        decoder.extend(&chunk[..n]);
                        Filled::Data
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Filled::Quiet,
                    Err(_) => Filled::Closed,
                }
            });
        }
        if ready.contains(&wake.raw_fd()) {
            Filled::Woken
        } else {
            Filled::Quiet
        }
    }

    /// Serves the next whole request on the connection on this thread when
    /// it is one a handler's thread serves (`ServeLent::takes`); the event a
    /// HandleEvent starts may be put in `here`, to run on this thread.
    pub fn serve_next(self, writer: &Arc<ConnWriter>, here: Here<'_>) -> Served {
        let Some(decoder) = self.decoder.as_ref() else {
            return Served::GiveBack(self);
        };
        match peek_request(decoder) {
            Peeked::Whole(req, len) => self.serve_request(req, len, writer, here),
            Peeked::Incomplete => Served::Kept(self),
            Peeked::Bad => Served::GiveBack(self),
        }
    }

    /// Serves `req`, the next whole request (`len` bytes) on the connection,
    /// on this thread when it is one a handler's thread serves.
    fn serve_request(
        mut self,
        req: rpc::Request,
        len: usize,
        writer: &Arc<ConnWriter>,
        here: Here<'_>,
    ) -> Served {
        // A reply still waiting to be written holds the next request back
        // (the I/O task flushes it as the peer reads).
        if writer.pending() > 0 || !self.server.takes(&req) {
            return Served::GiveBack(self);
        }
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.consume(len);
        }
        let server = Arc::clone(&self.server);
        server.serve_lent(req, writer, self, here)
    }
}

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
                // Another event's request: serve it here if it is one a
                // handler's thread serves, and go on waiting.
                Own::Other(None) => break,
                // This thread is busy with its own event: a new one runs
                // elsewhere.
                Own::Other(Some((req, len))) => {
                    match lend.serve_request(req, len, &writer, Here::nowhere()) {
                        Served::Kept(kept) => {
                            lend = kept;
                            continue;
                        }
                        Served::Passed => {
                            return resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
                        }
                        Served::GiveBack(back) => {
                            lend = back;
                            break;
                        }
                    }
                }
                Own::Incomplete => {}
            }
            if let Filled::Closed = lend.fill(&writer, wake, 1000) {
                break; // the I/O task will see it too
            }
        }
        // Give the connection back and wait for our Step elsewhere.
        drop(lend);
        resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
    }
}

/// The next frame on a lent connection.
enum Peeked {
    /// A whole request, and its length in bytes.
    Whole(rpc::Request, usize),
    Incomplete,
    /// Not a request: the I/O task answers it.
    Bad,
}

fn peek_request(decoder: &FrameDecoder) -> Peeked {
    match decoder.peek_frame() {
        Ok(Some((frame, len))) => match rpc::parse_request(frame) {
            Ok(req) => Peeked::Whole(req, len),
            Err(_) => Peeked::Bad,
        },
        Ok(None) => Peeked::Incomplete,
        Err(_) => Peeked::Bad,
    }
}

enum Own {
    Mine(Answer, u64, usize),
    /// Another request (decoded once, served from it), or a bad frame.
    Other(Option<(rpc::Request, usize)>),
    Incomplete,
}

/// Whether the next whole frame on a lent connection is the Step of event
/// `event_id`.
fn own_step(event_id: u64, decoder: &FrameDecoder) -> Own {
    let (req, len) = match peek_request(decoder) {
        Peeked::Whole(req, len) => (req, len),
        Peeked::Incomplete => return Own::Incomplete,
        Peeked::Bad => return Own::Other(None),
    };
    match req.call {
        Ok(rpc::Call::Step { event, data, error }) if event == event_id => {
            Own::Mine(step_answer(data, error), req.msgid, len)
        }
        _ => Own::Other(Some((req, len))),
    }
}
