//! The event registry, and how an event's outputs reach Kong.
//!
//! An event is one run of one phase handler (protocol.md §5). Its handler runs
//! elsewhere (an executor); each of its outputs answers the RPC Kong is
//! waiting on: a PDK call `{Method, Args}`, a terminal call, or `"ret"`. The
//! handler's side writes that reply itself through the event's [`Route`] (the
//! connection and msgid of the RPC in flight). Before writing a PDK call it
//! *parks* the event here, keyed by the server-wide event id and never by
//! connection: Kong's next `Step` may come on any pooled connection (§2). The
//! Step takes the event out and hands the handler Kong's answer together with
//! the route of the new RPC.
//!
//! An event leaves the registry on every ending: `ret`, a terminal call, an
//! exception, the Kong-side deadline, or shutdown. Dropping a parked entry
//! drops its resume sender, which wakes the handler with an error, so no
//! handler waits forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::oneshot;

use crate::ids::IdAllocator;
use crate::rpc;
use crate::writer::ConnWriter;

/// Kong's answer to a PDK call.
#[derive(Debug)]
pub enum Answer {
    /// `plugin.Step*`; `None` when `Data` was absent (the PDK returned nil).
    Value(Option<Value>),
    /// `plugin.StepError` (Kong ≤ 2.8 only, protocol.md §5.3).
    Error(String),
}

/// Where the reply to the RPC in flight goes.
pub struct Route {
    pub writer: Arc<ConnWriter>,
    pub msgid: u64,
}

/// What a Step hands a parked event.
pub struct Resume {
    pub answer: Answer,
    pub route: Route,
}

/// An event waiting for Kong's next Step.
pub struct Parked {
    pub resume: oneshot::Sender<Resume>,
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

    pub fn clear(&self) -> Vec<(u64, Parked)> {
        self.lock().drain().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The handler side of one event: writes its outputs as replies to Kong.
pub struct EventLink {
    pub event_id: u64,
    pub label: Arc<str>,
    events: Arc<Events>,
    route: Mutex<Option<Route>>,
}

/// The event can no longer reach Kong (its connection is gone).
#[derive(Debug)]
pub struct Unreachable;

impl EventLink {
    pub fn new(event_id: u64, label: Arc<str>, events: Arc<Events>, route: Route) -> Self {
        EventLink {
            event_id,
            label,
            events,
            route: Mutex::new(Some(route)),
        }
    }

    fn write(&self, result: &[u8]) -> Result<(), Unreachable> {
        let route = self
            .route
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(Unreachable)?;
        let mut out = Vec::with_capacity(8 + result.len());
        rpc::write_ok_raw(&mut out, route.msgid, result);
        route.writer.write_all(&out).map_err(|e| {
            log::debug!("event {}: reply not written: {e}", self.event_id);
            Unreachable
        })
    }

    /// Sends a PDK call; Kong's answer arrives on the returned receiver.
    pub fn call(
        &self,
        method: &str,
        args: &[u8],
    ) -> Result<oneshot::Receiver<Resume>, Unreachable> {
        let (resume, resumed) = oneshot::channel();
        // Parked before the reply is written: Kong's Step may follow at once.
        self.events.park(
            self.event_id,
            Parked {
                resume,
                since: Instant::now(),
                label: Arc::clone(&self.label),
            },
        );
        match self.write(&call_result(self.event_id, method, args)) {
            Ok(()) => Ok(resumed),
            Err(e) => {
                drop(self.events.take(self.event_id));
                Err(e)
            }
        }
    }

    /// Sends a terminal call: Kong never answers it (protocol.md §5.2.3).
    pub fn terminal(&self, method: &str, args: &[u8]) -> Result<(), Unreachable> {
        self.write(&call_result(self.event_id, method, args))
    }

    /// The handler returned: `"ret"`.
    pub fn done(&self) -> Result<(), Unreachable> {
        let mut out = Vec::with_capacity(24);
        rpc::write_value(
            &mut out,
            &rpc::map(vec![
                ("Data", Value::from("ret")),
                ("EventId", Value::from(self.event_id)),
            ]),
        );
        self.write(&out)
    }

    /// Takes Kong's answer and the route for the next reply.
    pub fn resume(&self, resume: Resume) -> Answer {
        *self.route.lock().unwrap_or_else(|p| p.into_inner()) = Some(resume.route);
        resume.answer
    }
}

/// `{"Data": {"Method": m, "Args": args}, "EventId": id}` around encoded args.
pub fn call_result(event_id: u64, method: &str, args: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + method.len() + args.len());
    let _ = rmp::encode::write_map_len(&mut out, 2);
    rpc::write_str(&mut out, "Data");
    let _ = rmp::encode::write_map_len(&mut out, 2);
    rpc::write_str(&mut out, "Method");
    rpc::write_str(&mut out, method);
    rpc::write_str(&mut out, "Args");
    out.extend_from_slice(args);
    rpc::write_str(&mut out, "EventId");
    let _ = rmp::encode::write_uint(&mut out, event_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> (Parked, oneshot::Receiver<Resume>) {
        let (resume, resumed) = oneshot::channel();
        let p = Parked {
            resume,
            since: Instant::now(),
            label: Arc::from("test"),
        };
        (p, resumed)
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

    #[test]
    fn a_link_parks_before_it_writes_and_unparks_when_it_cannot() {
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let writer = Arc::new(ConnWriter::new(std::os::fd::AsFd::as_fd(&a)).expect("dup"));
        let link = EventLink::new(
            5,
            Arc::from("t"),
            Arc::clone(&events),
            Route { writer, msgid: 9 },
        );
        let _resumed = link
            .call("kong.request.get_header", &[0x91, 0xa1, b'x'])
            .expect("written");
        assert_eq!(events.len(), 1);
        let mut buf = [0u8; 128];
        let n = std::io::Read::read(&mut b, &mut buf).expect("read");
        let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
        assert_eq!(reply[1].as_u64(), Some(9));
        assert_eq!(
            reply[3]["Data"]["Method"].as_str(),
            Some("kong.request.get_header")
        );
        // No route until Kong steps again: a second output cannot be written.
        assert!(link.call("kong.log.err", &[0x90]).is_err());
        assert_eq!(events.len(), 0);
    }

    use std::os::unix::net::UnixStream;
}
