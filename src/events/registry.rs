//! The events waiting for Kong's next Step, by server-wide id, and what a
//! Step hands the one it resumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::oneshot;

use super::fail_closed::{ClosingCall, OnStep, Pending};
use super::route::Route;
use crate::ids::IdAllocator;
use crate::phase::Phase;
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
    /// Its handler's PDK call (the channel the handler waits on), or the
    /// log of an event failing closed; `None` once the Step took it.
    pending: Option<Pending<oneshot::Sender<Resume>>>,
    pub since: Instant,
    pub label: Arc<str>,
    /// Rung when the event is resumed or dropped, for a handler that polls a
    /// borrowed connection meanwhile.
    pub(super) wake: Option<Arc<Wake>>,
}

impl Parked {
    pub fn new(resume: oneshot::Sender<Resume>, label: Arc<str>, wake: Option<Arc<Wake>>) -> Self {
        Parked {
            pending: Some(Pending::Handler(resume)),
            since: Instant::now(),
            label,
            wake,
        }
    }

    /// An event failing closed in `phase`, its `kong.log.err` sent.
    pub fn fail_closed(phase: Phase, label: Arc<str>) -> Self {
        Parked {
            pending: Some(Pending::FailClosed(phase)),
            since: Instant::now(),
            label,
            wake: None,
        }
    }

    /// Kong's Step for this event: hands Kong's answer to the handler, or
    /// says how the event ends on the Step's route.
    pub fn step(mut self, resume: Resume) -> Stepped {
        let end = match self.pending.take().map(Pending::on_step) {
            Some(OnStep::Resume(tx)) => match tx.send(resume) {
                Ok(()) => return Stepped::Resumed,
                // The handler is gone without ending its event: "ret".
                Err(resume) => return Stepped::End(resume.route, None),
            },
            Some(OnStep::End(last)) => last,
            None => None,
        };
        Stepped::End(resume.route, end)
    }
}

/// What a Step did to a parked event.
pub enum Stepped {
    /// Kong's answer reached the waiting handler.
    Resumed,
    /// The event ends: the Step is answered on this route with the call, or
    /// with `"ret"` (`None`).
    End(Route, Option<ClosingCall>),
}

impl Drop for Parked {
    fn drop(&mut self) {
        // After the answer was sent, or the sender dropped: wake the poller.
        drop(self.pending.take());
        if let Some(w) = &self.wake {
            w.ring();
        }
    }
}

/// Events by server-wide id (never by connection: Kong's Step may come on
/// any pooled connection). The one map every model keeps its events in: the
/// thread model the events parked until their Step ([`Events`]), the looped
/// model every event in flight (`models/looped/event.rs`). The lock is held for a
/// lookup only, never while Python or I/O runs.
pub struct Registry<T> {
    map: Mutex<HashMap<u64, T>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Registry<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, T>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: u64, event: T) {
        self.lock().insert(id, event);
    }

    pub fn take(&self, id: u64) -> Option<T> {
        self.lock().remove(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many events `pred` holds for.
    pub fn count(&self, pred: impl Fn(&T) -> bool) -> usize {
        self.lock().values().filter(|e| pred(e)).count()
    }

    /// Takes out every event `pred` holds for.
    pub fn take_where(&self, pred: impl Fn(&T) -> bool) -> Vec<(u64, T)> {
        let mut map = self.lock();
        let ids: Vec<u64> = map
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| map.remove(&id).map(|e| (id, e)))
            .collect()
    }

    pub fn drain(&self) -> Vec<(u64, T)> {
        self.lock().drain().collect()
    }
}

impl<T: Clone> Registry<T> {
    pub fn get(&self, id: u64) -> Option<T> {
        self.lock().get(&id).cloned()
    }

    /// Every event, left in place.
    pub fn values(&self) -> Vec<T> {
        self.lock().values().cloned().collect()
    }

    /// The events `pred` holds for, left in place.
    pub fn filter(&self, pred: impl Fn(&T) -> bool) -> Vec<T> {
        self.lock().values().filter(|e| pred(e)).cloned().collect()
    }
}

/// The thread model's registry: the events waiting for Kong's next Step,
/// and the server's event ids.
pub struct Events {
    parked: Registry<Parked>,
    ids: IdAllocator,
}

impl Events {
    pub fn new(ids: IdAllocator) -> Self {
        Events {
            parked: Registry::default(),
            ids,
        }
    }

    pub fn next_id(&self) -> u64 {
        self.ids.next()
    }

    pub fn park(&self, id: u64, parked: Parked) {
        self.parked.insert(id, parked);
    }

    /// Takes an event out for its Step.
    pub fn take(&self, id: u64) -> Option<Parked> {
        self.parked.take(id)
    }

    /// Removes the events that waited longer than `deadline` for Kong.
    pub fn expire(&self, deadline: Duration) -> Vec<(u64, Parked)> {
        self.parked.take_where(|p| p.since.elapsed() >= deadline)
    }

    /// Whether an event waits here for its next Step.
    pub fn contains(&self, id: u64) -> bool {
        self.parked.contains(id)
    }

    pub fn clear(&self) -> Vec<(u64, Parked)> {
        self.parked.drain()
    }

    pub fn len(&self) -> usize {
        self.parked.len()
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

    /// Kong's Step answering `msgid`, on a connection nobody reads.
    fn step(msgid: u64) -> Resume {
        let (ours, _kong) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let writer = Arc::new(crate::writer::ConnWriter::new(ours, 1 << 20).expect("writer"));
        Resume {
            answer: Answer::Value(None),
            route: Route {
                writer,
                msgid,
                lend: None,
            },
        }
    }

    #[test]
    fn a_step_hands_kongs_answer_to_the_waiting_handler() {
        let (p, mut resumed) = parked();
        assert!(matches!(p.step(step(3)), Stepped::Resumed));
        assert_eq!(resumed.try_recv().expect("resumed").route.msgid, 3);
    }

    #[test]
    fn a_step_for_a_handler_that_is_gone_ends_the_event_with_ret() {
        let (p, resumed) = parked();
        drop(resumed);
        match p.step(step(4)) {
            Stepped::End(route, None) => assert_eq!(route.msgid, 4),
            _ => panic!("ret on the Step's route"),
        }
    }

    #[test]
    fn the_step_of_a_failing_events_log_gets_the_500_or_ret() {
        let access = Parked::fail_closed(Phase::Access, Arc::from("p.access"));
        match access.step(step(5)) {
            Stepped::End(route, Some(call)) => {
                assert_eq!((route.msgid, call.method), (5, "kong.response.error"));
            }
            _ => panic!("the 500"),
        }
        let log = Parked::fail_closed(Phase::Log, Arc::from("p.log"));
        assert!(matches!(log.step(step(6)), Stepped::End(_, None)));
    }

    #[test]
    fn the_registry_finds_counts_and_takes_out_by_predicate() {
        let events: Registry<u32> = Registry::default();
        for id in 1..=4 {
            events.insert(id, id as u32 * 10);
        }
        assert_eq!(events.get(2), Some(20));
        assert_eq!(events.count(|v| *v > 20), 2);
        let mut high = events.take_where(|v| *v > 20);
        high.sort_unstable();
        assert_eq!(high, [(3, 30), (4, 40)]);
        assert_eq!(events.len(), 2);
        assert!(events.contains(1) && !events.contains(3));
        let mut rest = events.filter(|_| true);
        rest.sort_unstable();
        assert_eq!(rest, [10, 20]);
        assert_eq!(events.drain().len(), 2);
        assert_eq!(events.len(), 0);
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
