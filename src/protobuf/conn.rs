//! One connection from Kong on ProtoBuf:1, served by one thread: Kong sends
//! an `RpcCall`, and for a HandleEvent the whole event (PDK calls and their
//! replies) goes over this same connection before the `RpcReturn`.
//!
//! Reads wait in short ticks so that the thread notices shutdown; a frame
//! over `--max-message-size` closes the connection (it cannot be skipped
//! without reading it), every other problem is answered on it (Kong retries
//! a closed connection without end: docs/protobuf.md).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::frame::{push_frame, FrameError, FrameReader};

/// How often a waiting read looks at the stop flag.
const TICK: Duration = Duration::from_millis(250);
/// A write Kong does not take in this long means Kong is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    stream: UnixStream,
    reader: Mutex<FrameReader>,
    stop: Arc<AtomicBool>,
}

impl Conn {
    pub fn new(
        stream: UnixStream,
        max_frame: usize,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Conn {
            stream,
            reader: Mutex::new(FrameReader::new(max_frame)),
            stop,
        })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Kong's next `RpcCall`, however long the connection idles in Kong's
    /// pool; `GaveUp` once the server stops, or `leave()` says so, while no
    /// frame has begun.
    pub fn next_call(&self, leave: &dyn Fn() -> bool) -> Result<Vec<u8>, FrameError> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.next_frame(&self.stream, &mut |r| {
            r.has_partial() || !(self.stopping() || leave())
        })
    }

    /// Writes frames already joined with their lengths, in one write.
    pub fn send(&self, frames: &[u8]) -> std::io::Result<()> {
        (&self.stream).write_all(frames)
    }

    /// One PDK call: the method-name and argument frames in one write, then
    /// Kong's reply frame, waited for at most `limit`.
    pub fn ask(&self, method: &str, args: &[u8], limit: Duration) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(8 + method.len() + args.len());
        push_frame(&mut out, method.as_bytes())?;
        push_frame(&mut out, args)?;
        self.send(&out).map_err(FrameError::Io)?;
        let deadline = Instant::now() + limit;
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.next_frame(&self.stream, &mut |_| {
            !self.stopping() && Instant::now() < deadline
        })
    }

    /// Ends an event: the empty method name, then the `RpcReturn`, in one write.
    pub fn end_event(&self, rpc_return: &[u8]) -> Result<(), FrameError> {
        let mut out = Vec::with_capacity(8 + rpc_return.len());
        push_frame(&mut out, b"")?;
        push_frame(&mut out, rpc_return)?;
        self.send(&out).map_err(FrameError::Io)
    }

    /// Answers a command with its `RpcReturn`.
    pub fn reply(&self, rpc_return: &[u8]) -> Result<(), FrameError> {
        let mut out = Vec::with_capacity(4 + rpc_return.len());
        push_frame(&mut out, rpc_return)?;
        self.send(&out).map_err(FrameError::Io)
    }
}
