//! Instance ids as ProtoBuf:1 carries them: 32-bit (`int32 instance_id`),
//! while the instance registry's ids are 53-bit (src/ids.rs). Each instance
//! started on this wire gets a short id that maps to its registry id.
//!
//! Kong keeps an instance id after our process restarts, so a short id must
//! not name another instance in a newer process either: short ids start
//! from the clock (4 per second since 2024, so a process that started
//! fewer than 4 instances per second of its life is always passed) and wrap
//! within 31 bits, past 2040.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// 2024-01-01T00:00:00Z.
const BASE_SECS: u64 = 1_704_067_200;
const MASK: u32 = 0x7fff_ffff;

pub struct ShortIds {
    next: AtomicU32,
    to_long: Mutex<HashMap<i32, u64>>,
}

impl ShortIds {
    pub fn from_clock() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ShortIds::starting_at(
            (secs.saturating_sub(BASE_SECS).saturating_mul(4) & u64::from(MASK)) as u32,
        )
    }

    pub fn starting_at(first: u32) -> Self {
        ShortIds {
            next: AtomicU32::new(first),
            to_long: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i32, u64>> {
        self.to_long.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new short id for the registry's instance `long`; never 0 (the
    /// value of an absent field).
    pub fn assign(&self, long: u64) -> i32 {
        loop {
            let id = (self.next.fetch_add(1, Ordering::Relaxed) & MASK) as i32;
            if id != 0 {
                self.map().insert(id, long);
                return id;
            }
        }
    }

    pub fn long(&self, short: i32) -> Option<u64> {
        self.map().get(&short).copied()
    }

    /// The instance is gone (closed, or expired from the registry).
    pub fn forget(&self, short: i32) {
        self.map().remove(&short);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_map_back_and_skip_zero() {
        let ids = ShortIds::starting_at(MASK);
        let a = ids.assign(1 << 50);
        let b = ids.assign((1 << 50) + 1);
        assert_eq!(a, MASK as i32);
        // The counter wrapped past 0.
        assert_eq!(b, 1);
        assert_eq!(ids.long(a), Some(1 << 50));
        assert_eq!(ids.long(b), Some((1 << 50) + 1));
        ids.forget(a);
        assert_eq!(ids.long(a), None);
    }

    #[test]
    fn a_later_process_starts_above_an_earlier_one() {
        let now = ShortIds::from_clock().next.load(Ordering::Relaxed);
        assert!(now > 0 && now <= MASK);
    }
}
