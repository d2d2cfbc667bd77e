//! One connection of the looped ProtoBuf:1 server: non-blocking reads into
//! frames, writes that the socket does not take kept until it is writable,
//! and what the connection is waiting for (Kong's reply to a PDK call, or
//! replies to skip).
//!
//! No Python is called while its lock is held: resuming a handler may come
//! back into this connection.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pyo3::prelude::*;

use super::super::frame::{FrameError, FrameReader};
use super::super::methods::Ret;
use crate::events::StageCell;

/// A PDK call waiting for Kong's reply.
pub struct Waiting {
    pub token: Py<PyAny>,
    pub ret: Ret,
    pub name: &'static str,
    pub lua_style: bool,
    pub event_id: u64,
    pub stage: Arc<StageCell>,
    pub since: Instant,
}

#[derive(Default)]
struct ConnState {
    out: Vec<u8>,
    watching_write: bool,
    /// The sequence of the HandleEvent in progress.
    event: Option<i64>,
    /// When that event's handler last got Kong's request (the event began,
    /// or Kong's reply to its call came): what `--handler-timeout` measures
    /// while no call waits for Kong.
    turn: Option<Instant>,
    waiting: Option<Waiting>,
    /// Replies of calls nobody waits for (a terminal call, failing an event
    /// closed), to drop as they come.
    skip: usize,
    closed: bool,
}

pub struct LoopConn {
    pub id: u64,
    /// Whether `--handler-timeout` is on: only then is the handler's turn
    /// timed (a clock read per PDK call saved otherwise).
    times_turns: bool,
    stream: UnixStream,
    reader: Mutex<FrameReader>,
    state: Mutex<ConnState>,
}

/// What came in on a connection.
pub enum Incoming {
    /// Kong's reply to the call in `Waiting`.
    Reply(Waiting, Vec<u8>),
    /// An `RpcCall` (the connection is between events).
    Call(Vec<u8>),
    /// Nothing to act on (a skipped reply, or a frame out of place).
    Nothing,
}

/// Why a call could not be sent.
pub enum SendError {
    /// Another call of the event waits for Kong.
    Busy,
    Closed,
}

impl LoopConn {
    pub fn new(id: u64, stream: UnixStream, max_frame: usize, times_turns: bool) -> Self {
        LoopConn {
            id,
            times_turns,
            stream,
            reader: Mutex::new(FrameReader::new(max_frame)),
            state: Mutex::new(ConnState::default()),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next whole frame, `None` when none has arrived yet.
    pub fn next_frame(&self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        match reader.next_frame(&self.stream, &mut |_| false) {
            Ok(frame) => Ok(Some(frame)),
            Err(FrameError::GaveUp) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether bytes read from the socket wait in the buffer (when none
    /// do, the loop's next readiness says when more came: no read that
    /// would only find the socket empty).
    pub fn has_buffered(&self) -> bool {
        self.reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_partial()
    }

    /// Sorts a frame by what the connection waits for.
    pub fn classify(&self, frame: Vec<u8>) -> Incoming {
        let mut st = self.state();
        if st.skip > 0 {
            st.skip -= 1;
            return Incoming::Nothing;
        }
        if let Some(waiting) = st.waiting.take() {
            if self.times_turns {
                st.turn = Some(Instant::now());
            }
            return Incoming::Reply(waiting, frame);
        }
        if st.event.is_some() {
            log::warn!("ProtoBuf:1: a frame from Kong while no call waits for one; dropped");
            return Incoming::Nothing;
        }
        Incoming::Call(frame)
    }

    /// Whether the connection is between events with nothing buffered.
    pub fn is_idle(&self) -> bool {
        let st = self.state();
        st.event.is_none() && st.out.is_empty()
    }

    pub fn begin_event(&self, sequence: i64) {
        let mut st = self.state();
        st.event = Some(sequence);
        if self.times_turns {
            st.turn = Some(Instant::now());
        }
    }

    /// Since when the handler of event `sequence` has held Kong's request:
    /// `None` while its call waits for Kong, once the event ended or the
    /// connection closed, and always without `--handler-timeout`.
    pub fn held_since(&self, sequence: i64) -> Option<Instant> {
        let st = self.state();
        if st.closed || st.event != Some(sequence) || st.waiting.is_some() {
            return None;
        }
        st.turn
    }

    /// Writes `frames` and waits for the reply in `waiting`. `Ok(true)`: the
    /// socket did not take it all; the caller watches it for writing.
    pub fn send_call(&self, frames: &[u8], waiting: Waiting) -> Result<bool, SendError> {
        let mut st = self.state();
        if st.closed {
            return Err(SendError::Closed);
        }
        if st.waiting.is_some() {
            return Err(SendError::Busy);
        }
        st.waiting = Some(waiting);
        self.write_locked(&mut st, frames)
            .map_err(|_| SendError::Closed)
    }

    /// Writes `frames` of calls whose `replies` nobody waits for.
    pub fn send_unwaited(&self, frames: &[u8], replies: usize) -> Result<bool, SendError> {
        let mut st = self.state();
        if st.closed {
            return Err(SendError::Closed);
        }
        st.skip += replies;
        self.write_locked(&mut st, frames)
            .map_err(|_| SendError::Closed)
    }

    /// Ends the event: writes its last frames; a call still waiting (a task
    /// the handler left behind) gets its reply skipped, and is returned to
    /// be failed.
    pub fn end_event(&self, frames: &[u8]) -> (Result<bool, SendError>, Option<Waiting>) {
        let mut st = self.state();
        st.event = None;
        st.turn = None;
        let left = st.waiting.take();
        if left.is_some() {
            st.skip += 1;
        }
        if st.closed {
            return (Err(SendError::Closed), left);
        }
        (
            self.write_locked(&mut st, frames)
                .map_err(|_| SendError::Closed),
            left,
        )
    }

    /// Answers a command.
    pub fn send(&self, frames: &[u8]) -> Result<bool, SendError> {
        let mut st = self.state();
        if st.closed {
            return Err(SendError::Closed);
        }
        self.write_locked(&mut st, frames)
            .map_err(|_| SendError::Closed)
    }

    /// Writes what the socket takes now; keeps the rest. `Ok(true)` when the
    /// connection must now be watched for writing.
    fn write_locked(&self, st: &mut ConnState, frames: &[u8]) -> io::Result<bool> {
        if st.out.is_empty() {
            let sent = write_some(&self.stream, frames)?;
            st.out.extend_from_slice(&frames[sent..]);
        } else {
            st.out.extend_from_slice(frames);
        }
        let watch = !st.out.is_empty() && !st.watching_write;
        if watch {
            st.watching_write = true;
        }
        Ok(watch)
    }

    /// The socket is writable: writes what was kept. `Ok(true)` once all is
    /// written (stop watching).
    pub fn flush(&self) -> io::Result<bool> {
        let mut st = self.state();
        let sent = write_some(&self.stream, &st.out)?;
        st.out.drain(..sent);
        let done = st.out.is_empty();
        if done {
            st.watching_write = false;
        }
        Ok(done)
    }

    /// Marks the connection closed; the call waiting on it, to fail.
    pub fn close(&self) -> (Option<Waiting>, bool) {
        let mut st = self.state();
        st.closed = true;
        (st.waiting.take(), st.watching_write)
    }

    /// The call waiting longer than it may.
    pub fn overdue(&self, limit: std::time::Duration) -> bool {
        self.state()
            .waiting
            .as_ref()
            .is_some_and(|w| w.since.elapsed() > limit)
    }
}

/// Writes as much of `bytes` as the non-blocking socket takes.
fn write_some(mut stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (LoopConn, UnixStream) {
        let (ours, kong) = UnixStream::pair().expect("a socket pair");
        (LoopConn::new(1, ours, 1 << 20, true), kong)
    }

    #[test]
    fn the_handler_holds_kongs_request_from_the_event_begins_to_its_end() {
        let (conn, _kong) = conn();
        assert!(conn.held_since(7).is_none(), "no event yet");
        conn.begin_event(7);
        let since = conn.held_since(7).expect("held since the event began");
        assert!(since.elapsed() < std::time::Duration::from_secs(5));
        assert!(conn.held_since(8).is_none(), "another event's sequence");
        let (sent, left) = conn.end_event(b"");
        assert!(sent.is_ok() && left.is_none());
        assert!(conn.held_since(7).is_none(), "the event ended");
    }

    #[test]
    fn a_closed_connection_holds_nothing() {
        let (conn, _kong) = conn();
        conn.begin_event(3);
        let _ = conn.close();
        assert!(conn.held_since(3).is_none());
    }
}
