//! One epoll set holding the listener and every connection of a looped
//! server; the event loop watches only its descriptor.
//!
//! Watching each connection with the loop's own machinery cost, per request,
//! the loop's bookkeeping for one ready descriptor: in asyncio a selector
//! key lookup, a Handle and a Python-level dispatch. With this set the loop
//! sees one descriptor, readable whenever any of ours is (an epoll descriptor
//! is itself pollable), and one callback (`LoopCore.ready`) serves every
//! ready connection of that round, for the price of one `epoll_wait` with no
//! timeout. Level-triggered: whatever a round leaves unread keeps the set,
//! and so the loop's descriptor, ready.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Ready descriptors taken per round (more stay ready for the next one).
const BATCH: usize = 64;

pub struct Poller {
    epoll: OwnedFd,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller { epoll })
    }

    /// The descriptor for the event loop to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Reports `fd` as `token` whenever it is readable (or hung up).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops reporting `fd` (before it is closed, or to pause accepting).
    pub fn remove(&self, fd: RawFd) {
        let mut unused = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; failing (not registered) changes nothing.
        unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_DEL, fd, &mut unused) };
    }

    /// The tokens of the descriptors ready now, without waiting.
    pub fn ready(&self) -> Vec<u64> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: `events` has room for BATCH entries; timeout 0 never blocks.
        let n =
            unsafe { libc::epoll_wait(self.fd(), events.as_mut_ptr(), BATCH as libc::c_int, 0) };
        if n <= 0 {
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("epoll_wait failed: {e}");
                }
            }
            return Vec::new();
        }
        events[..n as usize].iter().map(|e| e.u64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_readable_descriptors_by_token_until_removed() {
        let poller = Poller::new().expect("epoll");
        let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
        poller.add(ours.as_raw_fd(), 7).expect("add");
        assert!(poller.ready().is_empty());
        theirs.write_all(b"x").expect("write");
        assert_eq!(poller.ready(), vec![7]);
        assert_eq!(poller.ready(), vec![7], "level-triggered: still unread");
        poller.remove(ours.as_raw_fd());
        assert!(poller.ready().is_empty());
    }
}
