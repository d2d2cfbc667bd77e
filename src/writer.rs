//! A connection's socket, shared by its I/O task and the event handlers.
//!
//! The reply to a `HandleEvent` or `Step` is the handler's next output, so the
//! handler's own thread writes it instead of handing it back to the I/O task.
//! In the thread model the handler also *borrows* the connection while it
//! waits for Kong's next Step (see `events/lent.rs`), reading it directly.
//! This object owns the connection's one descriptor; the I/O task watches it
//! through tokio (`AsyncFd`), so a connection costs one descriptor.
//!
//! Writes never block. What the socket does not take at once waits in the
//! connection's outbox, which its I/O task flushes when the peer reads; a
//! lock keeps whole replies in order. A peer that does not read its replies
//! holds up nobody else: the I/O task stops reading its requests until the
//! outbox is empty and disconnects it when it does not read for
//! [`STALLED_PEER`] or the outbox outgrows its bounds (`backlog.rs`: one
//! reply and a little more per connection, one budget for all of them).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::backlog::Backlog;

/// How long a peer may leave a reply unread before it is disconnected
/// (Kong's own socket timeout is 60 s).
pub const STALLED_PEER: Duration = Duration::from_secs(60);

struct Outbox {
    bytes: Vec<u8>,
    /// How much of `bytes` was already written.
    sent: usize,
    closed: bool,
    /// This connection's share of the process's unread replies.
    backlog: Backlog,
}

impl Outbox {
    fn pending(&self) -> usize {
        self.bytes.len() - self.sent
    }
}

pub struct ConnWriter {
    stream: UnixStream,
    outbox: Mutex<Outbox>,
    /// Rung when the outbox gets bytes, for the I/O task to flush them.
    pub queued: Notify,
}

impl AsRawFd for ConnWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl ConnWriter {
    /// Takes over a connection; `max_frame` sizes the process-wide budget of
    /// unread replies (`backlog.rs`).
    pub fn new(stream: UnixStream, max_frame: usize) -> io::Result<ConnWriter> {
        stream.set_nonblocking(true)?;
        Ok(ConnWriter {
            stream,
            outbox: Mutex::new(Outbox {
                bytes: Vec::new(),
                sent: 0,
                closed: false,
                backlog: Backlog::new(max_frame),
            }),
            queued: Notify::new(),
        })
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends one whole message without blocking: written now, or queued for
    /// the I/O task. Fails when the connection is closed, or when the peer
    /// leaves more unread than its backlog allows (it is then disconnected).
    pub fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut outbox = self.outbox();
        if outbox.closed {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let mut rest = bytes;
        if outbox.pending() == 0 {
            outbox.bytes.clear();
            outbox.sent = 0;
            rest = match self.write_now(bytes) {
                Ok(n) => &bytes[n..],
                Err(e) => {
                    outbox.closed = true;
                    return Err(e);
                }
            };
            if rest.is_empty() {
                return Ok(());
            }
        }
        let waiting = outbox.pending();
        if let Err(overflow) = outbox.backlog.admit(waiting, rest.len()) {
            self.close_locked(&mut outbox);
            log::warn!("connection closed: {overflow}");
            return Err(io::ErrorKind::WouldBlock.into());
        }
        outbox.bytes.extend_from_slice(rest);
        let pending = outbox.pending();
        outbox.backlog.set(pending);
        drop(outbox);
        self.queued.notify_one();
        Ok(())
    }

    /// Writes what the socket takes now; the count written.
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        let mut stream = &self.stream;
        while done < bytes.len() {
            match stream.write(&bytes[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes queued bytes; `Ok(true)` once nothing is left. For the I/O task.
    pub fn flush(&self) -> io::Result<bool> {
        let mut outbox = self.outbox();
        if outbox.closed {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let from = outbox.sent;
        let n = match self.write_now(&outbox.bytes[from..]) {
            Ok(n) => n,
            Err(e) => {
                self.close_locked(&mut outbox);
                return Err(e);
            }
        };
        outbox.sent += n;
        let pending = outbox.pending();
        outbox.backlog.set(pending);
        if pending == 0 {
            outbox.bytes = Vec::new();
            outbox.sent = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Bytes written by the handlers or the I/O task that the peer has not
    /// taken yet.
    pub fn pending(&self) -> usize {
        self.outbox().pending()
    }

    /// Hangs up: the peer sees the end of the stream even while handlers
    /// still hold this object; later writes fail.
    pub fn close(&self) {
        self.close_locked(&mut self.outbox());
    }

    fn close_locked(&self, outbox: &mut Outbox) {
        outbox.closed = true;
        outbox.bytes = Vec::new();
        outbox.sent = 0;
        outbox.backlog.set(0);
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads what is there without blocking; `Ok(0)` means the peer closed.
    pub fn read_nonblocking(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.stream).read(buf)
    }
}

/// Waits until one of `fds` is ready for its events, or `timeout_ms` passes;
/// returns the ready descriptors.
pub fn poll(fds: &[(RawFd, libc::c_short)], timeout_ms: i32) -> io::Result<Vec<RawFd>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid, exclusively borrowed array of `pfds.len()`
    // pollfd structs for the duration of the call; poll only writes `revents`.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    Ok(pfds
        .iter()
        .filter(|p| p.revents != 0)
        .map(|p| p.fd)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_does_not_read_gets_queued_bytes_then_is_cut_off() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let w = ConnWriter::new(a, 1 << 20).expect("writer");
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        // The kernel buffer fills, then the outbox, then the limit is hit:
        // none of this ever blocks.
        let err = loop {
            match w.write_all(&chunk) {
                Ok(()) => written += chunk.len(),
                Err(e) => break e,
            }
            assert!(written < 64 << 20, "never cut off");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(w.write_all(b"x").is_err(), "closed after the cut-off");
        drop(b);
    }

    #[test]
    fn flush_delivers_what_was_queued_in_order() {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let w = ConnWriter::new(a, 64 << 20).expect("writer");
        let mut sent = Vec::new();
        for i in 0..64u8 {
            let msg = vec![i; 16 * 1024];
            w.write_all(&msg).expect("queued");
            sent.extend_from_slice(&msg);
        }
        assert!(w.pending() > 0, "the socket buffer cannot hold 1 MiB");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        b.set_nonblocking(true).expect("nonblocking");
        while got.len() < sent.len() {
            let _ = w.flush().expect("flush");
            match b.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(got == sent, "bytes arrive whole and in order");
        assert_eq!(w.pending(), 0);
    }
}
