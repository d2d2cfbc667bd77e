//! The event registry, and how an event's outputs reach Kong.
//!
//! An event is one run of one phase handler (docs/protocol.md §5). Its handler runs
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
use crate::wake::Wake;
use crate::wire::FrameDecoder;
use crate::writer::ConnWriter;

/// Kong's answer to a PDK call.
#[derive(Debug)]
pub enum Answer {
    /// `plugin.Step*`; `None` when `Data` was absent (the PDK returned nil).
    Value(Option<Value>),
    /// `plugin.StepError` (Kong ≤ 2.8 only, docs/protocol.md §5.3).
    Error(String),
}

/// Where the reply to the RPC in flight goes.
pub struct Route {
    pub writer: Arc<ConnWriter>,
    pub msgid: u64,
    /// The connection's reading, lent by its I/O task until the reply is
    /// written (or longer, see [`Lend`]).
    pub lend: Option<Lend>,
}

/// A connection's reading, lent to an event's handler.
///
/// While a thread-model handler waits for Kong's next Step it reads the
/// connection that carried its last RPC itself: with Kong's keep-alive pool
/// the next Step usually comes on that same connection, and answering it on
/// the handler's own thread saves two thread wake-ups per PDK call. Anything
/// else that arrives (another event's RPC) makes the handler give the
/// connection back, bytes intact, to its I/O task, which waits meanwhile.
/// Dropping a `Lend` gives it back.
pub struct Lend {
    decoder: Option<FrameDecoder>,
    give_back: Option<oneshot::Sender<FrameDecoder>>,
}

impl Lend {
    pub fn new(decoder: FrameDecoder) -> (Lend, oneshot::Receiver<FrameDecoder>) {
        let (give_back, returned) = oneshot::channel();
        (
            Lend {
                decoder: Some(decoder),
                give_back: Some(give_back),
            },
            returned,
        )
    }
}

impl Drop for Lend {
    fn drop(&mut self) {
        if let (Some(tx), Some(decoder)) = (self.give_back.take(), self.decoder.take()) {
            let _ = tx.send(decoder);
        }
    }
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
    wake: Option<Arc<Wake>>,
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

/// The handler side of one event: writes its outputs as replies to Kong.
pub struct EventLink {
    pub event_id: u64,
    pub label: Arc<str>,
    events: Arc<Events>,
    /// The RPC in flight, and since when the handler has had it: `None` while
    /// a PDK call waits for Kong, and once the event has ended.
    route: Mutex<Option<(Route, Instant)>>,
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
        }
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
        result: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(Arc<ConnWriter>, Option<Lend>), LinkError> {
        let mut out = Vec::with_capacity(64);
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
    fn write_last(&self, result: impl FnOnce(&mut Vec<u8>)) -> Result<(), LinkError> {
        let (route, _) = self.route().take().ok_or(LinkError::Unreachable)?;
        self.write_to(route, result).map(drop)
    }

    /// Sends a PDK call; Kong's answer arrives on the returned receiver.
    pub fn call(&self, method: &str, args: &[u8]) -> Result<oneshot::Receiver<Resume>, LinkError> {
        self.send(method, args, None).map(|(resumed, _)| resumed)
    }

    #[allow(clippy::type_complexity)]
    fn send(
        &self,
        method: &str,
        args: &[u8],
        wake: Option<Arc<Wake>>,
    ) -> Result<(oneshot::Receiver<Resume>, Option<(Arc<ConnWriter>, Lend)>), LinkError> {
        // Taken before parking: a second call while one waits must not
        // replace the first one's place in the registry.
        let (route, _) = self.route().take().ok_or(LinkError::Busy)?;
        let (resume, resumed) = oneshot::channel();
        // Parked before the reply is written: Kong's Step may follow at once.
        self.events.park(
            self.event_id,
            Parked::new(resume, Arc::clone(&self.label), wake),
        );
        match self.write_to(route, |out| {
            write_call_result(out, self.event_id, method, args)
        }) {
            Ok((writer, lend)) => Ok((resumed, lend.map(|l| (writer, l)))),
            Err(e) => {
                drop(self.events.take(self.event_id));
                Err(e)
            }
        }
    }

    /// Sends a PDK call and waits for Kong's answer on this (blocking) thread,
    /// reading the borrowed connection directly when there is one.
    pub fn call_blocking(&self, method: &str, args: &[u8]) -> Result<Resume, LinkError> {
        let wake = Wake::for_this_thread();
        let (resumed, lent) = self.send(method, args, wake.clone())?;
        match (lent, wake) {
            (Some((writer, lend)), Some(wake)) => self.wait_lent(resumed, writer, lend, &wake),
            _ => resumed.blocking_recv().map_err(|_| LinkError::Unreachable),
        }
    }

    /// Waits for this event's Step on the lent connection, or for a resume
    /// (a Step on another connection, or the event dropped) rung on `wake`.
    fn wait_lent(
        &self,
        mut resumed: oneshot::Receiver<Resume>,
        writer: Arc<ConnWriter>,
        mut lend: Lend,
        wake: &Wake,
    ) -> Result<Resume, LinkError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            wake.clear();
            match resumed.try_recv() {
                Ok(resume) => return Ok(resume),
                Err(oneshot::error::TryRecvError::Closed) => return Err(LinkError::Unreachable),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let Some(decoder) = lend.decoder.as_mut() else {
                break;
            };
            match self.own_step(decoder) {
                Own::Mine(answer, msgid, len) => {
                    // Ours: answered on this thread, the connection stays lent.
                    let Some(mut parked) = self.events.take(self.event_id) else {
                        break; // expired just now: let the I/O task answer it
                    };
                    decoder.consume(len);
                    parked.wake = None; // answered here: nobody to wake
                    drop(parked);
                    return Ok(Resume {
                        answer,
                        route: Route {
                            writer,
                            msgid,
                            lend: Some(lend),
                        },
                    });
                }
                Own::Other => break,
                Own::Incomplete => {}
            }
            let ready = crate::writer::poll(
                &[
                    (writer.raw_fd(), libc::POLLIN),
                    (wake.raw_fd(), libc::POLLIN),
                ],
                1000,
            )
            .map_err(|_| LinkError::Unreachable)?;
            if ready.contains(&writer.raw_fd()) {
                match writer.read_nonblocking(&mut chunk) {
                    Ok(0) => break, // closed: the I/O task will see it too
                    Ok(n) => decoder.extend(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
        // Give the connection back and wait for our Step elsewhere.
        drop(lend);
        resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
    }

    /// Whether the next whole frame on a lent connection is this event's Step.
    fn own_step(&self, decoder: &FrameDecoder) -> Own {
        let (frame, len) = match decoder.peek_frame() {
            Ok(Some(found)) => found,
            Ok(None) => return Own::Incomplete,
            // A bad frame is the I/O task's to answer.
            Err(_) => return Own::Other,
        };
        let Ok(req) = rpc::parse_request(frame) else {
            return Own::Other;
        };
        let Ok(rpc::Method::Step { error }) = rpc::Method::parse(&req.method) else {
            return Own::Other;
        };
        let Some(entries) = req.params.first().and_then(rpc::as_map) else {
            return Own::Other;
        };
        if rpc::field(entries, "EventId").and_then(rpc::as_u64) != Some(self.event_id) {
            return Own::Other;
        }
        let data = rpc::field(entries, "Data").cloned();
        Own::Mine(step_answer(data, error), req.msgid, len)
    }

    /// Sends a terminal call: Kong never answers it (docs/protocol.md §5.2.3).
    pub fn terminal(&self, method: &str, args: &[u8]) -> Result<(), LinkError> {
        self.write_last(|out| write_call_result(out, self.event_id, method, args))
    }

    /// The handler returned: `"ret"`.
    pub fn done(&self) -> Result<(), LinkError> {
        self.write_last(|out| {
            let _ = rmp::encode::write_map_len(out, 2);
            rpc::write_str(out, "Data");
            rpc::write_str(out, "ret");
            rpc::write_str(out, "EventId");
            let _ = rmp::encode::write_uint(out, self.event_id);
        })
    }

    /// Takes Kong's answer and the route for the next reply.
    pub fn resume(&self, resume: Resume) -> Answer {
        *self.route() = Some((resume.route, Instant::now()));
        resume.answer
    }
}

enum Own {
    Mine(Answer, u64, usize),
    Other,
    Incomplete,
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

/// Appends `{"Data": {"Method": m, "Args": args}, "EventId": id}` around
/// already encoded args.
pub fn write_call_result(out: &mut Vec<u8>, event_id: u64, method: &str, args: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(out, 2);
    rpc::write_str(out, "Data");
    let _ = rmp::encode::write_map_len(out, 2);
    rpc::write_str(out, "Method");
    rpc::write_str(out, method);
    rpc::write_str(out, "Args");
    out.extend_from_slice(args);
    rpc::write_str(out, "EventId");
    let _ = rmp::encode::write_uint(out, event_id);
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

    use std::os::unix::net::UnixStream;
}
