//! Server-wide ids for instances and events.
//!
//! Kong caches instance ids per worker and keeps using them after our process
//! restarts (docs/protocol.md §1.3, §7). An id handed out by an earlier process must
//! therefore never name something else in this one: ids start from the wall
//! clock in milliseconds times 1000 and count up by one. A new process starts
//! above every id an older one could have reached unless that one created more
//! than 1000 ids per millisecond of its life. Ids stay below 2^53 (until the
//! year 2255) so that Lua's doubles hold them exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct IdAllocator {
    next: AtomicU64,
}

impl IdAllocator {
    pub fn from_clock() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        IdAllocator::starting_at(millis.saturating_mul(1000) % (1u64 << 53))
    }

    pub fn starting_at(first: u64) -> Self {
        IdAllocator {
            next: AtomicU64::new(first),
        }
    }

    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_allocator_starts_above_an_earlier_one() {
        let first = IdAllocator::from_clock();
        let a: Vec<u64> = (0..100).map(|_| first.next()).collect();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = IdAllocator::from_clock();
        let b = second.next();
        assert!(a.iter().all(|&x| x < b));
        assert!(b < 1u64 << 53);
    }
}
