//! The events waiting for Kong's next Step, by server-wide id, and what a
//! Step hands the one it resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::oneshot;

use super::route::Route;
use crate::ids::IdAllocator;
use crate::wake::Wake;

/// Kong's answer to a PDK call.
#[derive(Debug)]
pub enum Answer {
    /// `plugin.Step*`; `None` when `Data` was absent (the PDK returned nil).
    Value(Option<Value>),
    /// `plugin.StepError` (Kong ≤ 2.8 only, docs/protocol.md §5.3).
    Error(String),
}

/// What a Step hands a parked event.
pub struct Resume {
    pub answer: Answer,
    pub route: Route,
}

/// An event waiting for Kong's next Step.
pub struct Parked {
    resume: Option<oneshot::Sender<Resume>>,
    pub since: Instant,
    pub label: Arc<str>,
    /// Rung when the event is resumed or dropped, for a handler that polls a
    /// borrowed connection meanwhile.
    pub(super) wake: Option<Arc<Wake>>,
}

impl Parked {
    pub fn new(resume: oneshot::Sender<Resume>, label: Arc<str>, wake: Option<Arc<Wake>>) -> Self {
        Parked {
            resume: Some(resume),
            since: Instant::now(),
            label,
            wake,
        }
    }

    /// Hands Kong's answer to the handler; gives it back if the handler is gone.
    // The `Err` is the caller's own value handed back (as `oneshot::send`
    // does); boxing it would allocate on every Step.
    #[allow(clippy::result_large_err)]
    pub fn resume(mut self, resume: Resume) -> Result<(), Resume> {
        match self.resume.take() {
            Some(tx) => tx.send(resume),
            None => Err(resume),
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        // After the answer was sent, or the sender dropped: wake the poller.
        drop(self.resume.take());
        if let Some(w) = &self.wake {
            w.ring();
        }
    }
}

pub struct Events {
    map: Mutex<HashMap<u64, Parked>>,
    ids: IdAllocator,
}

impl Events {
    pub fn new(ids: IdAllocator) -> Self {
        Events {
            map: Mutex::new(HashMap::new()),
            ids,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Parked>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_id(&self) -> u64 {
        self.ids.next()
    }

    pub fn park(&self, id: u64, parked: Parked) {
        self.lock().insert(id, parked);
    }

    /// Takes an event out for its Step; the lock is held for the lookup only.
    pub fn take(&self, id: u64) -> Option<Parked> {
        self.lock().remove(&id)
    }

    /// Removes the events that waited longer than `deadline` for Kong.
    pub fn expire(&self, deadline: Duration) -> Vec<(u64, Parked)> {
        let mut map = self.lock();
        let stale: Vec<u64> = map
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= deadline)
            .map(|(id, _)| *id)
            .collect();
        stale
            .into_iter()
            .filter_map(|id| map.remove(&id).map(|p| (id, p)))
            .collect()
    }

    /// Whether an event waits here for its next Step.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn clear(&self) -> Vec<(u64, Parked)> {
        self.lock().drain().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Kong's answer from a Step's `Data` (absent: nil).
pub fn step_answer(data: Option<Value>, is_error: bool) -> Answer {
    if is_error {
        Answer::Error(match data {
            Some(Value::String(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(other) => other.to_string(),
            None => "error".into(),
        })
    } else {
        Answer::Value(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> (Parked, oneshot::Receiver<Resume>) {
        let (resume, resumed) = oneshot::channel();
        (Parked::new(resume, Arc::from("test"), None), resumed)
    }

    #[test]
    fn take_removes_and_unknown_is_none() {
        let events = Events::new(IdAllocator::starting_at(1));
        let id = events.next_id();
        let (p, _resumed) = parked();
        events.park(id, p);
        assert!(events.take(id).is_some());
        assert!(events.take(id).is_none());
        assert_eq!(events.len(), 0);
    }

    #[test]
    fn expiry_wakes_the_waiting_handler() {
        let events = Events::new(IdAllocator::starting_at(1));
        let (p, mut resumed) = parked();
        events.park(7, p);
        let gone = events.expire(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        drop(gone);
        // The sender is gone: the handler's wait ends with an error.
        assert!(resumed.try_recv().is_err());
        assert_eq!(events.len(), 0);
    }
}
