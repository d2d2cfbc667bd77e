//! A per-thread wake-up descriptor (Linux eventfd).
//!
//! A handler thread that reads its borrowed connection also has to notice a
//! Step that arrives on another connection, or its event being dropped; both
//! ring this descriptor, which the thread polls next to the connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Wake {
    fd: OwnedFd,
    /// Mirrors the descriptor's state so that clearing an unrung wake costs
    /// no system call (the common case, once per PDK call).
    rung: AtomicBool,
}

impl Wake {
    fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; a negative result is an error
        // and is checked before the descriptor is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Wake {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            rung: AtomicBool::new(false),
        })
    }

    /// The calling thread's wake descriptor.
    pub fn for_this_thread() -> Option<Arc<Wake>> {
        thread_local! {
            static WAKE: Option<Arc<Wake>> = Wake::new().ok().map(Arc::new);
        }
        WAKE.with(Clone::clone)
    }

    pub fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own; an
        // error (counter overflow) only means it is already ringing.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears a pending ring.
    pub fn clear(&self) {
        if !self.rung.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; EAGAIN when unset.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(wake: &Wake) -> bool {
        !crate::writer::poll(&[(wake.raw_fd(), libc::POLLIN)], 0)
            .expect("poll")
            .is_empty()
    }

    #[test]
    fn a_ring_shows_on_the_descriptor_until_cleared() {
        let wake = Wake::new().expect("eventfd");
        assert!(!readable(&wake), "fresh: not rung");
        wake.ring();
        wake.ring();
        assert!(readable(&wake));
        // One clear takes every ring before it.
        wake.clear();
        assert!(!readable(&wake));
        // Clearing an unrung wake is harmless.
        wake.clear();
        assert!(!readable(&wake));
        wake.ring();
        assert!(readable(&wake), "rings again after a clear");
    }

    #[test]
    fn a_ring_from_another_thread_wakes_a_poller() {
        let wake = Wake::new().map(Arc::new).expect("eventfd");
        let w = Arc::clone(&wake);
        let ringer = std::thread::spawn(move || w.ring());
        let ready = crate::writer::poll(&[(wake.raw_fd(), libc::POLLIN)], 5000).expect("poll");
        assert_eq!(ready, vec![wake.raw_fd()]);
        ringer.join().expect("ringer");
    }

    #[test]
    fn each_thread_has_its_own_wake() {
        let here = Wake::for_this_thread().expect("eventfd");
        let again = Wake::for_this_thread().expect("eventfd");
        assert!(Arc::ptr_eq(&here, &again), "one per thread");
        let there = std::thread::spawn(|| Wake::for_this_thread().expect("eventfd").raw_fd())
            .join()
            .expect("thread");
        assert_ne!(here.raw_fd(), there);
    }
}
