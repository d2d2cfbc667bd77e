//! An epoll set of the listener and every connection, which the runner's
//! loop watches as one descriptor (readable when any member is).

use std::io;
use std::os::fd::RawFd;

pub struct Poll {
    fd: RawFd,
}

impl Poll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poll { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Watches `fd` for reading (level-triggered), reported as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a descriptor not in the set only fails.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// The tokens ready now, without waiting.
    pub fn ready(&self) -> Vec<u64> {
        const MAX: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        // SAFETY: `events` has room for MAX entries, as the call is told.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), MAX as i32, 0) };
        if n <= 0 {
            return Vec::new();
        }
        events[..n as usize].iter().map(|e| e.u64).collect()
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}
