//! The instance registry: one entry per plugin configuration Kong started.
//!
//! Keyed by a server-wide id, never by connection (docs/protocol.md §2). `H` is the
//! executor's handle on the live plugin object, so this module stays free of
//! Python. Kong never closes orphaned instances (§7.3), so idle ones expire;
//! an instance with an event in flight never does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmpv::Value;

use crate::ids::IdAllocator;

pub struct Instance<H> {
    pub id: u64,
    pub name: String,
    /// The config as the plugin sees it, for status replies.
    pub config: Value,
    pub handle: H,
    /// Seconds since the Unix epoch.
    pub start_time: f64,
    in_flight: AtomicUsize,
    /// Milliseconds since the registry's epoch.
    last_used: AtomicU64,
}

impl<H> Instance<H> {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Marks an instance busy for as long as it lives (one per running event).
pub struct InFlight<H> {
    instance: Arc<Instance<H>>,
    epoch: Instant,
}

impl<H> InFlight<H> {
    pub fn instance(&self) -> &Arc<Instance<H>> {
        &self.instance
    }
}

impl<H> Drop for InFlight<H> {
    fn drop(&mut self) {
        self.instance
            .last_used
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Instances<H> {
    map: Mutex<HashMap<u64, Arc<Instance<H>>>>,
    ids: IdAllocator,
    epoch: Instant,
    pub last_start: Mutex<Option<f64>>,
    pub last_close: Mutex<Option<f64>>,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<H> Instances<H> {
    pub fn new(ids: IdAllocator) -> Self {
        Instances {
            map: Mutex::new(HashMap::new()),
            ids,
            epoch: Instant::now(),
            last_start: Mutex::new(None),
            last_close: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Instance<H>>>> {
        // A panic while holding this lock leaves the map itself consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, name: String, config: Value, handle: H) -> Arc<Instance<H>> {
        let now = unix_now();
        let instance = Arc::new(Instance {
            id: self.ids.next(),
            name,
            config,
            handle,
            start_time: now,
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
        });
        self.lock().insert(instance.id, Arc::clone(&instance));
        *self.last_start.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        instance
    }

    pub fn get(&self, id: u64) -> Option<Arc<Instance<H>>> {
        self.lock().get(&id).cloned()
    }

    /// Looks an instance up and marks it busy in one step, so that expiry
    /// cannot remove it between the two.
    pub fn acquire(&self, id: u64) -> Option<InFlight<H>> {
        let map = self.lock();
        let instance = map.get(&id)?;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight {
            instance: Arc::clone(instance),
            epoch: self.epoch,
        })
    }

    /// Removes an instance. Events already running keep their reference and
    /// finish (Kong closes the old instance right after starting its
    /// replacement, docs/protocol.md §7.2).
    pub fn remove(&self, id: u64) -> Option<Arc<Instance<H>>> {
        let removed = self.lock().remove(&id);
        if removed.is_some() {
            *self.last_close.lock().unwrap_or_else(|p| p.into_inner()) = Some(unix_now());
        }
        removed
    }

    /// Removes and returns the instances idle for longer than `ttl`.
    pub fn expire_idle(&self, ttl: Duration) -> Vec<Arc<Instance<H>>> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let ttl = ttl.as_millis() as u64;
        let mut map = self.lock();
        let stale: Vec<u64> = map
            .values()
            .filter(|i| {
                i.in_flight() == 0 && now.saturating_sub(i.last_used.load(Ordering::Acquire)) >= ttl
            })
            .map(|i| i.id)
            .collect();
        stale.iter().filter_map(|id| map.remove(id)).collect()
    }

    pub fn snapshot(&self) -> Vec<Arc<Instance<H>>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|i| i.id);
        all
    }

    pub fn clear(&self) -> Vec<Arc<Instance<H>>> {
        self.lock().drain().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_instances_never_expire() {
        let reg: Instances<()> = Instances::new(IdAllocator::starting_at(10));
        let a = reg.insert("p".into(), Value::Nil, ());
        let b = reg.insert("p".into(), Value::Nil, ());
        let busy = reg.acquire(a.id).expect("present");
        let gone = reg.expire_idle(Duration::ZERO);
        assert_eq!(gone.iter().map(|i| i.id).collect::<Vec<_>>(), vec![b.id]);
        assert!(reg.get(a.id).is_some());
        drop(busy);
        assert_eq!(reg.expire_idle(Duration::ZERO).len(), 1);
        assert!(reg.snapshot().is_empty());
    }

    #[test]
    fn removed_ids_are_unknown_and_never_reused() {
        let reg: Instances<()> = Instances::new(IdAllocator::starting_at(0));
        let a = reg.insert("p".into(), Value::Nil, ());
        assert!(reg.remove(a.id).is_some());
        assert!(reg.get(a.id).is_none());
        let b = reg.insert("p".into(), Value::Nil, ());
        assert_ne!(a.id, b.id);
    }
}
