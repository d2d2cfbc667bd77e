//! Writing replies to a connection from any thread.
//!
//! The reply to a `HandleEvent` or `Step` is the handler's next output, so the
//! handler's own thread writes it (through a duplicate of the socket's
//! descriptor) instead of handing it back to the I/O thread: one thread wake-up
//! fewer per PDK call. The I/O thread writes its own replies through the same
//! writer; a lock keeps whole replies from interleaving.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

pub struct ConnWriter {
    stream: Mutex<UnixStream>,
}

impl ConnWriter {
    /// Duplicates the descriptor of a connection. It stays non-blocking (the
    /// flag belongs to the shared open file), so a full socket buffer is waited
    /// out with `poll`.
    pub fn new(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<ConnWriter> {
        let owned = fd.try_clone_to_owned()?;
        Ok(ConnWriter {
            stream: Mutex::new(UnixStream::from(owned)),
        })
    }

    /// Writes one whole message.
    pub fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        while !bytes.is_empty() {
            match stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(stream.as_fd())?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Blocks until the socket can take more bytes (a slow reader), 60 s at most
/// like Kong's own send timeout (protocol.md §2).
fn wait_writable(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call, the count
    // is 1, and the descriptor is kept open by the borrowed stream.
    let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
    match n {
        1.. => Ok(()),
        0 => Err(io::ErrorKind::TimedOut.into()),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
