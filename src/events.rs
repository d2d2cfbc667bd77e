//! The event registry and the messages between an event's handler and Kong.
//!
//! An event is one run of one phase handler (protocol.md §5). The handler runs
//! elsewhere (an executor) and talks to the RPC side through a channel of
//! [`Out`] messages; each PDK call carries a one-shot sender for its answer.
//! Between two RPCs of an event, its channel and pending answer are *parked*
//! here, keyed by the server-wide event id and never by connection: Kong's next
//! `Step` may arrive on any pooled connection (§2). An event leaves the
//! registry on every ending: `ret`, a terminal call, an exception, the Kong-side
//! deadline, or shutdown. Dropping a parked entry drops its answer sender,
//! which wakes the handler with an error, so no handler waits forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::{mpsc, oneshot};

use crate::ids::IdAllocator;

/// What a handler sends towards Kong.
#[derive(Debug)]
pub enum Out {
    /// A PDK call; `args` is an encoded msgpack array.
    Call {
        method: Arc<str>,
        args: Vec<u8>,
        answer: oneshot::Sender<Answer>,
    },
    /// `kong.response.exit` / `kong.response.error`: Kong will not answer and
    /// will never send another Step for this event (protocol.md §5.2.3).
    Terminal { method: Arc<str>, args: Vec<u8> },
    /// The handler returned: Kong gets `"ret"`.
    Done,
}

/// Kong's answer to a PDK call.
#[derive(Debug)]
pub enum Answer {
    /// `plugin.Step*`; `None` when `Data` was absent (the PDK returned nil).
    Value(Option<Value>),
    /// `plugin.StepError` (Kong ≤ 2.8 only, protocol.md §5.3).
    Error(String),
}

/// An event waiting for Kong's next Step.
pub struct Parked {
    pub outputs: mpsc::UnboundedReceiver<Out>,
    pub answer: oneshot::Sender<Answer>,
    pub since: Instant,
    pub label: Arc<str>,
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

    /// Takes an event out while its Step is being served; the lock is held
    /// for the lookup only.
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

    pub fn clear(&self) -> Vec<(u64, Parked)> {
        self.lock().drain().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> (Parked, oneshot::Receiver<Answer>) {
        let (_tx, rx) = mpsc::unbounded_channel();
        let (answer, answered) = oneshot::channel();
        let p = Parked {
            outputs: rx,
            answer,
            since: Instant::now(),
            label: Arc::from("test"),
        };
        (p, answered)
    }

    #[test]
    fn take_removes_and_unknown_is_none() {
        let events = Events::new(IdAllocator::starting_at(1));
        let id = events.next_id();
        let (p, _answered) = parked();
        events.park(id, p);
        assert!(events.take(id).is_some());
        assert!(events.take(id).is_none());
        assert_eq!(events.len(), 0);
    }

    #[test]
    fn expiry_wakes_the_waiting_handler() {
        let events = Events::new(IdAllocator::starting_at(1));
        let (p, mut answered) = parked();
        events.park(7, p);
        let gone = events.expire(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        drop(gone);
        // The sender is gone: the handler's wait ends with an error.
        assert!(answered.try_recv().is_err());
        assert_eq!(events.len(), 0);
    }
}
