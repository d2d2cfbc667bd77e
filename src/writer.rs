//! A connection's descriptor, usable from any thread.
//!
//! The reply to a `HandleEvent` or `Step` is the handler's next output, so the
//! handler's own thread writes it (through a duplicate of the socket's
//! descriptor) instead of handing it back to the I/O thread. In the thread
//! model the handler also *borrows* the connection while it waits for Kong's
//! next Step (see `events.rs`, `Lend`), reading it directly. The I/O thread
//! writes its own replies through the same object; a lock keeps whole replies
//! from interleaving.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

pub struct ConnWriter {
    stream: UnixStream,
    write_lock: Mutex<()>,
}

impl ConnWriter {
    /// Duplicates the descriptor of a connection. It stays non-blocking (the
    /// flag belongs to the shared open file), so waits go through `poll`.
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<ConnWriter> {
        let owned = fd.try_clone_to_owned()?;
        Ok(ConnWriter {
            stream: UnixStream::from(owned),
            write_lock: Mutex::new(()),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Writes one whole message.
    pub fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let _whole = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut stream = &self.stream;
        while !bytes.is_empty() {
            match stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A slow reader: wait up to Kong's own 60 s send timeout.
                    if poll(&[(self.stream.as_fd().as_raw_fd(), libc::POLLOUT)], 60_000)?.is_empty()
                    {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
