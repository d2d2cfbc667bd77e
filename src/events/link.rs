//! The handler's side of one event: it writes each output as the reply to
//! the RPC Kong has in flight, parking the event before a PDK call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::fail_closed::log_err;
use super::registry::{Answer, Events, Parked, Resume};
use super::route::{Lend, Route};
use crate::phase::Phase;
use crate::rpc;
use crate::wake::Wake;
use crate::writer::ConnWriter;

/// The handler side of one event: writes its outputs as replies to Kong.
pub struct EventLink {
    pub event_id: u64,
    pub label: Arc<str>,
    pub(super) events: Arc<Events>,
    /// The RPC in flight, and since when the handler has had it: `None` while
    /// a PDK call waits for Kong, and once the event has ended.
    route: Mutex<Option<(Route, Instant)>>,
    /// Set by an executor whose thread goes on reading the connection after
    /// the handler returned (`models/threads/linger.rs`): the lend of the
    /// last RPC is kept for it after `"ret"` instead of given back.
    keep: AtomicBool,
    kept: Mutex<Option<(Arc<ConnWriter>, Lend)>>,
}

/// Why an output could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The event can no longer reach Kong (its connection is gone, or it ended).
    Unreachable,
    /// Another PDK call of this event is still waiting for Kong's answer:
    /// Kong runs one call of an event at a time.
    Busy,
}

impl EventLink {
    pub fn new(event_id: u64, label: Arc<str>, events: Arc<Events>, route: Route) -> Self {
        EventLink {
            event_id,
            label,
            events,
            route: Mutex::new(Some((route, Instant::now()))),
            keep: AtomicBool::new(false),
            kept: Mutex::new(None),
        }
    }

    /// Keeps the connection's reading after `"ret"` for [`take_connection`](Self::take_connection).
    pub fn keep_connection(&self) {
        self.keep.store(true, Ordering::Release);
    }

    /// The connection that carried `"ret"`, when it was lent and kept.
    pub fn take_connection(&self) -> Option<(Arc<ConnWriter>, Lend)> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn route(&self) -> MutexGuard<'_, Option<(Route, Instant)>> {
        self.route.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the RPC in flight away from a handler that has held it for at
    /// least `limit` without answering: a new link on the same event, for
    /// whoever answers Kong in its place. The handler's own link is left
    /// without a route, so nothing it sends later reaches Kong.
    pub fn take_stuck(&self, limit: Duration) -> Option<EventLink> {
        let mut route = self.route();
        if route
            .as_ref()
            .is_none_or(|(_, since)| since.elapsed() < limit)
        {
            return None;
        }
        let (route, _) = route.take()?;
        Some(EventLink::new(
            self.event_id,
            Arc::clone(&self.label),
            Arc::clone(&self.events),
            route,
        ))
    }

    /// Writes the reply to the RPC in flight on `route`; returns the route's
    /// lend, if any. `result` appends the encoded result to the reply.
    fn write_to(
        &self,
        route: Route,
        capacity: usize,
        result: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(Arc<ConnWriter>, Option<Lend>), LinkError> {
        let mut out = Vec::with_capacity(capacity);
        rpc::write_ok_prefix(&mut out, route.msgid);
        result(&mut out);
        match route.writer.write_all(&out) {
            Ok(()) => Ok((route.writer, route.lend)),
            Err(e) => {
                log::debug!("event {}: reply not written: {e}", self.event_id);
                Err(LinkError::Unreachable)
            }
        }
    }

    /// Writes the event's last output.
    fn write_last(
        &self,
        capacity: usize,
        result: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), LinkError> {
        let (route, _) = self.route().take().ok_or(LinkError::Unreachable)?;
        self.write_to(route, capacity, result).map(drop)
    }

    /// Sends a PDK call; Kong's answer arrives on the returned receiver.
    pub fn call(&self, method: &str, args: &[u8]) -> Result<oneshot::Receiver<Resume>, LinkError> {
        self.send(method, args, None).map(|(resumed, _)| resumed)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn send(
        &self,
        method: &str,
        args: &[u8],
        wake: Option<Arc<Wake>>,
    ) -> Result<(oneshot::Receiver<Resume>, Option<(Arc<ConnWriter>, Lend)>), LinkError> {
        // Taken before parking: a second call while one waits must not
        // replace the first one's place in the registry.
        let (route, _) = self.route().take().ok_or(LinkError::Busy)?;
        let (resume, resumed) = oneshot::channel();
        let parked = Parked::new(resume, Arc::clone(&self.label), wake);
        let (writer, lend) = self.park_and_call(route, parked, method, args)?;
        Ok((resumed, lend.map(|l| (writer, l))))
    }

    /// Parks the event as `parked`, then writes the call on `route`: parked
    /// first, as Kong's Step may follow the reply at once.
    fn park_and_call(
        &self,
        route: Route,
        parked: Parked,
        method: &str,
        args: &[u8],
    ) -> Result<(Arc<ConnWriter>, Option<Lend>), LinkError> {
        self.events.park(self.event_id, parked);
        self.write_to(route, call_result_len(method, args), |out| {
            rpc::write_call_result(out, self.event_id, method, args)
        })
        .inspect_err(|_| drop(self.events.take(self.event_id)))
    }

    /// Fails the event closed (`fail_closed.rs`): `kong.log.err(message)`
    /// answers the RPC in flight, and the event waits in the registry for
    /// its Step, which ends it. Nothing runs meanwhile: whoever serves that
    /// Step answers it.
    pub fn fail_closed(&self, phase: Phase, message: &str) {
        let Some((route, _)) = self.route().take() else {
            return;
        };
        let log = log_err(message);
        let parked = Parked::fail_closed(phase, Arc::clone(&self.label));
        if let Err(e) = self.park_and_call(route, parked, log.method, &log.args) {
            log::debug!("event {}: not failed closed: {e:?}", self.event_id);
        }
    }

    /// Sends a terminal call: Kong never answers it (docs/protocol.md §5.2.3).
    pub fn terminal(&self, method: &str, args: &[u8]) -> Result<(), LinkError> {
        self.write_last(call_result_len(method, args), |out| {
            rpc::write_call_result(out, self.event_id, method, args)
        })
    }

    /// The handler returned: `"ret"`.
    pub fn done(&self) -> Result<(), LinkError> {
        let (route, _) = self.route().take().ok_or(LinkError::Unreachable)?;
        let (writer, lend) = self.write_to(route, 64, |out| rpc::write_ret(out, self.event_id))?;
        if let (Some(lend), true) = (lend, self.keep.load(Ordering::Acquire)) {
            *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Some((writer, lend));
        }
        Ok(())
    }

    /// Takes Kong's answer and the route for the next reply.
    pub fn resume(&self, resume: Resume) -> Answer {
        *self.route() = Some((resume.route, Instant::now()));
        resume.answer
    }
}

/// The bytes a reply carrying one PDK call takes, at most: the reply's
/// header with its msgid (12), the two maps and four keys (28), the
/// method's length (5) and the event id (9), plus the method and the args.
/// Sized right, the reply is written without growing its buffer.
fn call_result_len(method: &str, args: &[u8]) -> usize {
    56 + method.len() + args.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdAllocator;

    #[test]
    fn a_link_parks_before_it_writes_and_unparks_when_it_cannot() {
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let writer = Arc::new(ConnWriter::new(a, 1 << 20).expect("writer"));
        let link = EventLink::new(
            5,
            Arc::from("t"),
            Arc::clone(&events),
            Route {
                writer,
                msgid: 9,
                lend: None,
            },
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
        // No route until Kong steps again: a second call is refused and
        // leaves the first one parked.
        assert_eq!(
            link.call("kong.log.err", &[0x90]).err(),
            Some(LinkError::Busy)
        );
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn failing_closed_answers_the_rpc_in_flight_with_the_log_and_waits_for_its_step() {
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let (a, mut kong) = UnixStream::pair().expect("socketpair");
        let writer = Arc::new(ConnWriter::new(a, 1 << 20).expect("writer"));
        let route = Route {
            writer,
            msgid: 2,
            lend: None,
        };
        let link = EventLink::new(6, Arc::from("p.access"), Arc::clone(&events), route);
        link.fail_closed(Phase::Access, "p.access raised: boom");
        let mut buf = [0u8; 128];
        let n = std::io::Read::read(&mut kong, &mut buf).expect("read");
        let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
        assert_eq!(reply[1].as_u64(), Some(2));
        assert_eq!(reply[3]["Data"]["Method"].as_str(), Some("kong.log.err"));
        assert_eq!(
            reply[3]["Data"]["Args"][0].as_str(),
            Some("p.access raised: boom")
        );
        assert!(events.contains(6), "the log's Step ends the event");
        // The route is spent: the handler has nothing left to send on.
        assert_eq!(link.done(), Err(LinkError::Unreachable));
    }

    use std::os::unix::net::UnixStream;
}
