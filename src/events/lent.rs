//! The thread model's fast path: the thread that runs a handler reads the
//! connection it was lent (see `route.rs`) itself. While the handler waits
//! for Kong's answer to a PDK call, the Step usually comes on that
//! connection (Kong's keep-alive pool hands out the connection it got back
//! last), and answering it on the handler's own thread saves two thread
//! wake-ups per PDK call. Another event's HandleEvent or Step on that
//! connection is served on this thread too (the event it starts or resumes
//! takes the connection along); anything else makes the thread give the
//! connection back, bytes intact, to its I/O task. A Step that comes on
//! another connection rings the thread's wake-up descriptor.

use std::cell::RefCell;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::link::{EventLink, LinkError};
use super::registry::{step_answer, Answer, Resume};
use super::route::{Here, Lend, Route, Served};
use crate::rpc;
use crate::wake::Wake;
use crate::wire::FrameDecoder;
use crate::writer::ConnWriter;

/// What waiting on a lent connection ended with.
pub enum Filled {
    /// New bytes were read.
    Data,
    /// The thread's wake-up descriptor rang.
    Woken,
    /// Nothing within the time limit.
    Quiet,
    /// The connection is closed or failed: give it back, its task sees it too.
    Closed,
}

impl Lend {
    /// Waits up to `timeout_ms` for bytes on the lent connection or a ring
    /// of `wake`, and reads what came.
    pub fn fill(&mut self, writer: &ConnWriter, wake: &Wake, timeout_ms: i32) -> Filled {
        thread_local! {
            // One read buffer per thread: zeroing 16 KB on every wait cost
            // more instructions than the rest of a PDK call.
            static CHUNK: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
        }
        let Ok(ready) = crate::writer::poll(
            &[
                (writer.raw_fd(), libc::POLLIN),
                (wake.raw_fd(), libc::POLLIN),
            ],
            timeout_ms,
        ) else {
            return Filled::Closed;
        };
        if ready.contains(&writer.raw_fd()) {
            let Some(decoder) = self.decoder.as_mut() else {
                return Filled::Closed;
            };
            return CHUNK.with(|chunk| {
                let mut chunk = chunk.borrow_mut();
                match writer.read_nonblocking(&mut chunk) {
                    Ok(0) => Filled::Closed,
                    Ok(n) => {
                        decoder.extend(&chunk[..n]);
                        Filled::Data
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Filled::Quiet,
                    Err(_) => Filled::Closed,
                }
            });
        }
        if ready.contains(&wake.raw_fd()) {
            Filled::Woken
        } else {
            Filled::Quiet
        }
    }

    /// Serves the next whole request on the connection on this thread when
    /// it is one a handler's thread serves (`ServeLent::takes`); the event a
    /// HandleEvent starts may be put in `here`, to run on this thread.
    pub fn serve_next(self, writer: &Arc<ConnWriter>, here: Here<'_>) -> Served {
        let Some(decoder) = self.decoder.as_ref() else {
            return Served::GiveBack(self);
        };
        match peek_request(decoder) {
            Peeked::Whole(req, len) => self.serve_request(req, len, writer, here),
            Peeked::Incomplete => Served::Kept(self),
            Peeked::Bad => Served::GiveBack(self),
        }
    }

    /// Serves `req`, the next whole request (`len` bytes) on the connection,
    /// on this thread when it is one a handler's thread serves.
    fn serve_request(
        mut self,
        req: rpc::Request,
        len: usize,
        writer: &Arc<ConnWriter>,
        here: Here<'_>,
    ) -> Served {
        // A reply still waiting to be written holds the next request back
        // (the I/O task flushes it as the peer reads).
        if writer.pending() > 0 || !self.server.takes(&req) {
            return Served::GiveBack(self);
        }
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.consume(len);
        }
        let server = Arc::clone(&self.server);
        server.serve_lent(req, writer, self, here)
    }
}

impl EventLink {
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
            match own_step(self.event_id, decoder) {
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
                // Another event's request: serve it here if it is one a
                // handler's thread serves, and go on waiting.
                Own::Other(None) => break,
                // This thread is busy with its own event: a new one runs
                // elsewhere.
                Own::Other(Some((req, len))) => {
                    match lend.serve_request(req, len, &writer, Here::nowhere()) {
                        Served::Kept(kept) => {
                            lend = kept;
                            continue;
                        }
                        Served::Passed => {
                            return resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
                        }
                        Served::GiveBack(back) => {
                            lend = back;
                            break;
                        }
                    }
                }
                Own::Incomplete => {}
            }
            if let Filled::Closed = lend.fill(&writer, wake, 1000) {
                break; // the I/O task will see it too
            }
        }
        // Give the connection back and wait for our Step elsewhere.
        drop(lend);
        resumed.blocking_recv().map_err(|_| LinkError::Unreachable)
    }
}

/// The next frame on a lent connection.
enum Peeked {
    /// A whole request, and its length in bytes.
    Whole(rpc::Request, usize),
    Incomplete,
    /// Not a request: the I/O task answers it.
    Bad,
}

fn peek_request(decoder: &FrameDecoder) -> Peeked {
    match decoder.peek_frame() {
        Ok(Some((frame, len))) => match rpc::parse_request(frame) {
            Ok(req) => Peeked::Whole(req, len),
            Err(_) => Peeked::Bad,
        },
        Ok(None) => Peeked::Incomplete,
        Err(_) => Peeked::Bad,
    }
}

enum Own {
    Mine(Answer, u64, usize),
    /// Another request (decoded once, served from it), or a bad frame.
    Other(Option<(rpc::Request, usize)>),
    Incomplete,
}

/// Whether the next whole frame on a lent connection is the Step of event
/// `event_id`.
fn own_step(event_id: u64, decoder: &FrameDecoder) -> Own {
    let (req, len) = match peek_request(decoder) {
        Peeked::Whole(req, len) => (req, len),
        Peeked::Incomplete => return Own::Incomplete,
        Peeked::Bad => return Own::Other(None),
    };
    match req.call {
        Ok(rpc::Call::Step { event, data, error }) if event == event_id => {
            Own::Mine(step_answer(data, error), req.msgid, len)
        }
        _ => Own::Other(Some((req, len))),
    }
}

#[cfg(test)]
mod tests {
    //! The handler thread's side of a lent connection, against a socket pair
    //! standing for Kong and a stock rmpv encoder for Kong's requests.

    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::time::Duration;

    use rmpv::Value;

    use super::*;
    use crate::events::registry::{Events, Parked, Stepped};
    use crate::events::route::ServeLent;
    use crate::ids::IdAllocator;
    use crate::rpc::map;
    use crate::test_support::request;

    const MAX_FRAME: usize = 1 << 20;

    fn step(msgid: u64, event: u64, data: Value) -> Vec<u8> {
        request(
            msgid,
            "plugin.Step",
            map(vec![("EventId", Value::from(event)), ("Data", data)]),
        )
    }

    fn decoder(bytes: &[u8]) -> FrameDecoder {
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        decoder.extend(bytes);
        decoder
    }

    #[test]
    fn peek_request_sees_a_whole_request_without_consuming_it() {
        let bytes = step(4, 7, Value::from("x"));
        let decoder = decoder(&bytes);
        let Peeked::Whole(req, len) = peek_request(&decoder) else {
            panic!("a whole request");
        };
        assert_eq!((req.msgid, len), (4, bytes.len()));
        assert!(matches!(req.call, Ok(rpc::Call::Step { event: 7, .. })));
        // Peeking leaves the bytes for whoever serves them.
        assert!(matches!(peek_request(&decoder), Peeked::Whole(..)));
        assert!(!decoder.is_empty());
    }

    #[test]
    fn peek_request_waits_for_the_rest_of_a_frame() {
        let bytes = step(4, 7, Value::from("x"));
        assert!(matches!(
            peek_request(&decoder(&bytes[..bytes.len() - 1])),
            Peeked::Incomplete
        ));
        assert!(matches!(peek_request(&decoder(&[])), Peeked::Incomplete));
    }

    #[test]
    fn peek_request_calls_a_reply_or_garbage_bad() {
        // A response (kind 1) is not a request.
        let mut reply = Vec::new();
        rmpv::encode::write_value(
            &mut reply,
            &Value::Array(vec![Value::from(1), Value::from(3), Value::Nil, Value::Nil]),
        )
        .expect("encode");
        assert!(matches!(peek_request(&decoder(&reply)), Peeked::Bad));
        // 0xc1 is never valid msgpack.
        assert!(matches!(peek_request(&decoder(&[0xc1])), Peeked::Bad));
    }

    #[test]
    fn a_request_with_a_wrong_call_is_still_whole() {
        // Its msgid is known: whoever serves it answers the error.
        let bytes = request(5, "plugin.Nope", Value::Nil);
        let Peeked::Whole(req, _) = peek_request(&decoder(&bytes)) else {
            panic!("whole");
        };
        assert_eq!(req.msgid, 5);
        assert!(req.call.is_err());
    }

    #[test]
    fn own_step_tells_this_events_step_from_the_rest() {
        let bytes = step(11, 7, Value::from("hello"));
        match own_step(7, &decoder(&bytes)) {
            Own::Mine(Answer::Value(Some(v)), msgid, len) => {
                assert_eq!((v.as_str(), msgid, len), (Some("hello"), 11, bytes.len()));
            }
            _ => panic!("event 7's Step"),
        }
        // The same Step is another event's to event 8.
        match own_step(8, &decoder(&bytes)) {
            Own::Other(Some((req, len))) => assert_eq!((req.msgid, len), (11, bytes.len())),
            _ => panic!("another event's Step"),
        }
        // A HandleEvent is never a Step of ours.
        let handle = request(
            12,
            "plugin.HandleEvent",
            map(vec![
                ("InstanceId", Value::from(1)),
                ("EventName", Value::from("access")),
            ]),
        );
        assert!(matches!(
            own_step(7, &decoder(&handle)),
            Own::Other(Some(_))
        ));
        assert!(matches!(own_step(7, &decoder(&[0xc1])), Own::Other(None)));
        assert!(matches!(
            own_step(7, &decoder(&bytes[..3])),
            Own::Incomplete
        ));
    }

    #[test]
    fn own_step_carries_a_step_error_and_a_missing_data() {
        let error = request(
            2,
            "plugin.StepError",
            map(vec![
                ("EventId", Value::from(7)),
                ("Data", Value::from("boom")),
            ]),
        );
        match own_step(7, &decoder(&error)) {
            Own::Mine(Answer::Error(e), 2, _) => assert_eq!(e, "boom"),
            _ => panic!("event 7's StepError"),
        }
        let nil = request(3, "plugin.Step", map(vec![("EventId", Value::from(7))]));
        assert!(matches!(
            own_step(7, &decoder(&nil)),
            Own::Mine(Answer::Value(None), 3, _)
        ));
    }

    /// Stands for the service: serves the Steps of events in the registry
    /// (handing them the connection, as the service does) when `takes`.
    struct Server {
        events: Arc<Events>,
        takes: bool,
        served: Mutex<Vec<u64>>,
    }

    impl ServeLent for Server {
        fn takes(&self, req: &rpc::Request) -> bool {
            self.takes && matches!(req.call, Ok(rpc::Call::Step { .. }))
        }

        fn serve_lent(
            &self,
            req: rpc::Request,
            writer: &Arc<ConnWriter>,
            lend: Lend,
            _here: Here<'_>,
        ) -> Served {
            let Ok(rpc::Call::Step { event, data, error }) = req.call else {
                return Served::GiveBack(lend);
            };
            self.served.lock().expect("lock").push(event);
            let Some(parked) = self.events.take(event) else {
                return Served::Kept(lend);
            };
            let resume = Resume {
                answer: step_answer(data, error),
                route: Route {
                    writer: Arc::clone(writer),
                    msgid: req.msgid,
                    lend: Some(lend),
                },
            };
            match parked.step(resume) {
                Stepped::Resumed => Served::Passed,
                Stepped::End(..) => panic!("the other event's handler is gone"),
            }
        }
    }

    /// Kong's end, our writer, the registry, the server and a link for
    /// event `id` whose RPC in flight came on the lent connection.
    struct Setup {
        kong: UnixStream,
        writer: Arc<ConnWriter>,
        events: Arc<Events>,
        server: Arc<Server>,
        returned: oneshot::Receiver<FrameDecoder>,
        link: EventLink,
    }

    fn setup(id: u64, takes: bool) -> Setup {
        let (ours, kong) = UnixStream::pair().expect("socketpair");
        kong.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let writer = Arc::new(ConnWriter::new(ours, MAX_FRAME).expect("writer"));
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let server = Arc::new(Server {
            events: Arc::clone(&events),
            takes,
            served: Mutex::new(Vec::new()),
        });
        let (lend, returned) = Lend::new(
            FrameDecoder::new(MAX_FRAME),
            Arc::clone(&server) as Arc<dyn ServeLent>,
        );
        let link = EventLink::new(
            id,
            Arc::from("t"),
            Arc::clone(&events),
            Route {
                writer: Arc::clone(&writer),
                msgid: 1,
                lend: Some(lend),
            },
        );
        Setup {
            kong,
            writer,
            events,
            server,
            returned,
            link,
        }
    }

    /// Reads the PDK call the handler sent: its msgid and method.
    fn read_call(kong: &mut UnixStream) -> (u64, String) {
        let mut buf = vec![0u8; 4096];
        let n = kong.read(&mut buf).expect("a reply");
        let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
        let method = reply[3]["Data"]["Method"].as_str().expect("a call");
        (reply[1].as_u64().expect("msgid"), method.to_string())
    }

    #[test]
    fn the_handlers_own_step_on_the_lent_connection_resumes_it_there() {
        let Setup {
            mut kong,
            events,
            mut returned,
            link,
            ..
        } = setup(7, true);
        let handler = std::thread::spawn(move || {
            let resume = link
                .call_blocking("kong.request.get_path", &[0x90])
                .expect("resumed");
            (link, resume)
        });
        assert_eq!(
            read_call(&mut kong),
            (1, "kong.request.get_path".to_string())
        );
        kong.write_all(&step(2, 7, Value::from("/p")))
            .expect("step");
        let (link, resume) = handler.join().expect("handler");
        let Answer::Value(Some(path)) = &resume.answer else {
            panic!("a value: {:?}", resume.answer);
        };
        assert_eq!(path.as_str(), Some("/p"));
        // The new RPC in flight is the Step, and the connection stays lent.
        assert_eq!(resume.route.msgid, 2);
        assert!(resume.route.lend.is_some());
        assert_eq!(events.len(), 0, "taken out of the registry");
        assert!(matches!(
            returned.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        // Replying gives the rest back in order: "ret" answers msgid 2.
        link.resume(resume);
        link.done().expect("ret");
        let mut buf = vec![0u8; 256];
        let n = kong.read(&mut buf).expect("ret");
        let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
        assert_eq!(reply[1].as_u64(), Some(2));
        assert_eq!(reply[3]["Data"].as_str(), Some("ret"));
        // Not kept (no linger): the connection went back to its I/O task.
        let decoder = returned.blocking_recv().expect("given back");
        assert!(decoder.is_empty());
    }

    #[test]
    fn another_events_step_is_served_through_the_registry_then_ours_comes_elsewhere() {
        let Setup {
            mut kong,
            writer,
            events,
            server,
            link,
            ..
        } = setup(7, true);
        // Event 8 waits for Kong too, its reply written elsewhere.
        let (other_tx, mut other) = oneshot::channel();
        events.park(8, Parked::new(other_tx, Arc::from("o"), None));
        let handler = std::thread::spawn(move || {
            link.call_blocking("kong.log.err", &[0x90])
                .map(|resume| resume.answer)
        });
        assert_eq!(read_call(&mut kong).1, "kong.log.err");
        kong.write_all(&step(3, 8, Value::from(true)))
            .expect("step");
        // Event 8 is resumed on the handler's thread and takes the
        // connection along.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let resumed = loop {
            match other.try_recv() {
                Ok(resumed) => break resumed,
                Err(oneshot::error::TryRecvError::Empty) => {
                    assert!(std::time::Instant::now() < deadline, "event 8 not resumed");
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("event 8 dropped: {e}"),
            }
        };
        assert_eq!(resumed.route.msgid, 3);
        assert!(resumed.route.lend.is_some(), "the connection went along");
        assert!(matches!(
            resumed.answer,
            Answer::Value(Some(Value::Boolean(true)))
        ));
        assert_eq!(*server.served.lock().expect("lock"), vec![8]);
        // Event 7's Step comes on another connection: its I/O task resumes
        // it through the registry.
        let parked = events.take(7).expect("event 7 still parked");
        let resume = Resume {
            answer: Answer::Value(Some(Value::from(5))),
            route: Route {
                writer,
                msgid: 4,
                lend: None,
            },
        };
        assert!(matches!(parked.step(resume), Stepped::Resumed));
        let answer = handler.join().expect("handler").expect("resumed");
        assert!(matches!(answer, Answer::Value(Some(Value::Integer(i))) if i.as_u64() == Some(5)));
    }

    #[test]
    fn a_request_the_thread_does_not_serve_gives_the_connection_back_intact() {
        let Setup {
            mut kong,
            writer,
            events,
            server,
            returned,
            link,
        } = setup(7, false);
        let handler = std::thread::spawn(move || {
            link.call_blocking("kong.log.err", &[0x90])
                .map(|resume| resume.route.msgid)
        });
        read_call(&mut kong);
        let bytes = step(3, 8, Value::Nil);
        kong.write_all(&bytes).expect("step");
        // Given back with the Step unread, for the I/O task to serve.
        let mut decoder = returned.blocking_recv().expect("given back");
        let frame = decoder.next_frame().expect("frame").expect("whole");
        assert_eq!(frame[1].as_u64(), Some(3));
        assert!(decoder.is_empty());
        assert!(server.served.lock().expect("lock").is_empty());
        // The handler still waits for its Step, now through the registry.
        assert!(!handler.is_finished());
        let parked = events.take(7).expect("still parked");
        let route = Route {
            writer,
            msgid: 9,
            lend: None,
        };
        let resume = Resume {
            answer: Answer::Value(None),
            route,
        };
        assert!(matches!(parked.step(resume), Stepped::Resumed));
        assert_eq!(handler.join().expect("handler"), Ok(9));
    }

    #[test]
    fn a_dropped_event_ends_the_wait_on_the_lent_connection() {
        let Setup {
            mut kong,
            events,
            link,
            ..
        } = setup(7, true);
        let handler = std::thread::spawn(move || link.call_blocking("kong.log.err", &[0x90]).err());
        read_call(&mut kong);
        // Expired (Kong gave up): the parked entry is dropped, which rings
        // the handler's wake-up while it polls the connection.
        drop(events.take(7).expect("parked"));
        assert_eq!(
            handler.join().expect("handler"),
            Some(LinkError::Unreachable)
        );
    }
}
