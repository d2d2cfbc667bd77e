//! One socket connection: read frames, answer each request in order.
//!
//! Kong never pipelines (docs/protocol.md §2), so a connection serves one request
//! at a time. Replies are written whole, with the `serverPid` notification in
//! front of the first one (§2, "Notifications"), and nothing is ever written
//! after a reply that was not asked for (Kong would drop it).
//!
//! A peer that does not read its replies stalls only itself: writes never
//! block (`writer.rs`), this task stops reading the peer's requests while a
//! reply waits to be written, flushes it as the peer reads, and hangs up on a
//! peer that reads nothing for [`STALLED_PEER`].

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::dispatch::{reply_bytes, Dispatcher, Outcome, Pass};
use crate::events::{Lend, Route, ServeLent};
use crate::handover::{self, Hop, Upstream};
use crate::rpc::{self, parse_request, Call};
use crate::rpc_error::RpcError;
use crate::service::Service;
use crate::wire::{FrameDecoder, WireError};
use crate::writer::{ConnWriter, STALLED_PEER};

pub async fn serve(
    stream: UnixStream,
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    stop: watch::Receiver<bool>,
) {
    let opened = stream.into_std().and_then(|s| {
        let writer = Arc::new(ConnWriter::new(s, max_frame)?);
        let fd = register(&writer)?;
        Ok((writer, fd))
    });
    let (writer, fd) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            log::warn!("connection dropped: {e}");
            return;
        }
    };
    let mut conn = Connection {
        writer,
        fd: Some(Arc::new(fd)),
        service: Arc::clone(&dispatcher.service),
        dispatcher,
        max_frame,
        stop,
        decoder: FrameDecoder::new(max_frame),
        greeted: false,
        upstream: None,
        older: None,
    };
    conn.service.connections.fetch_add(1, Ordering::AcqRel);
    conn.run().await;
    conn.service.connections.fetch_sub(1, Ordering::AcqRel);
    // Handlers may still hold the writer: hang up now all the same, so the
    // peer sees the end and their late writes fail at once.
    conn.writer.close();
}

/// Registers the connection's descriptor with the runtime's reactor.
fn register(writer: &Arc<ConnWriter>) -> io::Result<AsyncFd<Arc<ConnWriter>>> {
    // SAFETY: the descriptor belongs to the `UnixStream` inside the writer,
    // which closes it only when the last `Arc` is dropped; the `AsyncFd`
    // holds one of those `Arc`s, so the descriptor stays open and is never
    // replaced while it is registered (`close()` only shuts the socket down,
    // it does not close the descriptor).
    Ok(unsafe { AsyncFd::register(Arc::clone(writer)) }?)
}

struct Connection {
    writer: Arc<ConnWriter>,
    /// The descriptor as registered with the reactor; `None` while the
    /// connection's reading is lent to a handler's thread: the reactor would
    /// otherwise wake this runtime's thread for every message that thread
    /// reads itself.
    fd: Option<Arc<AsyncFd<Arc<ConnWriter>>>>,
    service: Arc<Service>,
    /// The service with its executor, also lent with the connection's
    /// reading to a handler's thread.
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    stop: watch::Receiver<bool>,
    decoder: FrameDecoder,
    greeted: bool,
    /// Set once this server was replaced (`handover.rs`).
    upstream: Option<Upstream>,
    /// The link to the server this one replaced, once a Step was passed
    /// back to it (`handover.rs`).
    older: Option<Upstream>,
}

/// What to do after a frame.
enum Next {
    Continue,
    Close,
}

impl Connection {
    async fn run(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // One request at a time, and only while the peer reads: a reply
            // still waiting to be written holds the next request back.
            while self.writer.pending() == 0 {
                match self.decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        if let Next::Close = self.serve_frame(frame).await {
                            return;
                        }
                    }
                    Err(e) => {
                        if let Next::Close = self.refuse_frame(e) {
                            return;
                        }
                    }
                }
            }
            if self.writer.pending() > 0 {
                if self.flush().await.is_err() {
                    return;
                }
                continue;
            }
            let mut stop = self.stop.clone();
            let Ok(fd) = self.watched() else {
                return;
            };
            let fd = &*fd;
            let read = tokio::select! {
                ready = fd.readable() => match ready {
                    Ok(mut guard) => guard.try_io(|w| w.get_ref().read_nonblocking(&mut chunk)),
                    Err(e) => Ok(Err(e)),
                },
                // A handler queued a reply while this task was idle.
                _ = self.writer.queued.notified() => continue,
                _ = stop.changed() => return,
            };
            match read {
                Err(_would_block) => {}
                Ok(Ok(0)) => {
                    // Kong's readiness probes (docs/protocol.md §1.3) connect and close.
                    if !self.decoder.is_empty() {
                        log::debug!("connection closed in the middle of a message");
                    }
                    return;
                }
                Ok(Ok(n)) => self.decoder.extend(&chunk[..n]),
                Ok(Err(e)) => {
                    log::debug!("connection read failed: {e}");
                    return;
                }
            }
        }
    }

    /// Writes what waits in the outbox as the peer reads it; fails when the
    /// connection is gone, the peer stalls, or the server stops.
    async fn flush(&mut self) -> io::Result<()> {
        let mut stop = self.stop.clone();
        let fd = self.watched()?;
        let writer = Arc::clone(&self.writer);
        let drained = async {
            loop {
                let mut guard = fd.writable().await?;
                if writer.flush()? {
                    return Ok::<(), io::Error>(());
                }
                // The socket buffer is full again: wait for the peer to read.
                guard.clear_ready();
            }
        };
        tokio::select! {
            done = tokio::time::timeout(STALLED_PEER, drained) => match done {
                Ok(result) => result,
                Err(_) => {
                    log::warn!(
                        "connection closed: the peer read none of its {} bytes of replies \
                         for {} s",
                        self.writer.pending(),
                        STALLED_PEER.as_secs()
                    );
                    Err(io::ErrorKind::TimedOut.into())
                }
            },
            _ = stop.changed() => Err(io::ErrorKind::Interrupted.into()),
        }
    }

    /// The descriptor registered with the reactor (again, after a lend).
    fn watched(&mut self) -> io::Result<Arc<AsyncFd<Arc<ConnWriter>>>> {
        if self.fd.is_none() {
            self.fd = Some(Arc::new(register(&self.writer)?));
        }
        self.fd
            .clone()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Takes the descriptor off the reactor while a handler's thread reads it.
    fn unwatch(&mut self) {
        // Dropping the last handle deregisters it; the descriptor stays open
        // (the writer owns it).
        self.fd = None;
    }

    /// Writes the `serverPid` notification once, before the first reply.
    fn greet(&mut self) {
        if self.greeted {
            return;
        }
        self.greeted = true;
        let mut out = Vec::with_capacity(16);
        rpc::write_server_pid(&mut out, std::process::id());
        if let Err(e) = self.writer.write_all(&out) {
            // The request is still served: whatever it starts must end
            // cleanly on its own.
            log::debug!("greeting not written: {e}");
        }
    }

    async fn serve_frame(&mut self, frame: rmpv::Value) -> Next {
        self.service.note_request();
        self.greet();
        let req = match parse_request(frame) {
            Ok(req) => req,
            Err(bad) => {
                log::warn!("{}", bad.why);
                let mut out = Vec::new();
                rpc::write_error_raw(&mut out, &bad.msgid, &bad.why.to_string());
                return self.send(&out);
            }
        };
        let msgid = req.msgid;
        let call = match req.call {
            Ok(call) => call,
            Err(e) => {
                let out = reply_bytes(msgid, "request", Err(e.into()));
                return self.send(&out);
            }
        };
        let method = call.method();
        let hop = Hop::of(req.tag.as_deref());
        // A HandleEvent or Step lends the connection's reading to the
        // event's handler (events::Lend) until it gives it back.
        let (lend, returned) = if matches!(call, Call::HandleEvent { .. } | Call::Step { .. }) {
            self.unwatch();
            let (lend, returned) = Lend::new(
                std::mem::replace(&mut self.decoder, FrameDecoder::new(self.max_frame)),
                Arc::clone(&self.dispatcher) as Arc<dyn ServeLent>,
            );
            (Some(lend), Some(returned))
        } else {
            (None, None)
        };
        let route = Route {
            writer: Arc::clone(&self.writer),
            msgid,
            lend,
        };
        let outcome = if call.blocks() {
            // The plugin's constructor runs: off the async threads.
            let service = Arc::clone(&self.service);
            tokio::task::spawn_blocking(move || service.serve(&*service, call, hop, route))
                .await
                .unwrap_or_else(|e| {
                    let route = Route {
                        writer: Arc::clone(&self.writer),
                        msgid,
                        lend: None,
                    };
                    Outcome::Reply(route, Err(RpcError::InstanceRefused(e.to_string())))
                })
        } else {
            self.service.serve(&*self.service, call, hop, route)
        };
        // What is left to do once the connection's reading is back here (a
        // route dropped here gives it back).
        let after = match outcome {
            Outcome::Run(job) => {
                self.dispatcher.run(job);
                None
            }
            Outcome::Deferred => None,
            // The route is dropped here: its lend goes back before the wait below.
            Outcome::Reply(route, reply) => {
                drop(route);
                Some(Ok(reply_bytes(msgid, method, reply)))
            }
            Outcome::Pass(Pass {
                call,
                route,
                to,
                hop,
                otherwise,
            }) => {
                drop(route);
                Some(Err(Pass {
                    route: (),
                    call,
                    to,
                    hop,
                    otherwise,
                }))
            }
        };
        if let Some(mut returned) = returned {
            let mut stop = self.stop.clone();
            self.decoder = loop {
                tokio::select! {
                    back = &mut returned => match back {
                        Ok(d) => break d,
                        Err(_) => return Next::Close,
                    },
                    // The handler's reply did not fit the socket:
                    // deliver it while the handler waits for Kong.
                    _ = self.writer.queued.notified() => {
                        if self.flush().await.is_err() {
                            return Next::Close;
                        }
                    }
                    _ = stop.changed() => return Next::Close,
                }
            };
        }
        match after {
            None => Next::Continue,
            Some(Ok(out)) => self.send(&out),
            Some(Err(pass)) => {
                let out = self.pass(pass, msgid, method).await;
                self.send(&out)
            }
        }
    }

    /// Passes a call on to another server of ours (`handover.rs`): forward
    /// to the newer one, or back to the older one (whose absence leaves the
    /// call this server's answer).
    async fn pass(&mut self, pass: Pass<()>, msgid: u64, method: &str) -> Vec<u8> {
        if pass.hop == Hop::FromNewer {
            if let Some(out) = self.pass_back(&pass.to, &pass.call, msgid).await {
                return out;
            }
            return reply_bytes(msgid, method, Err(pass.otherwise));
        }
        self.forward(&pass.to, &pass.call, msgid).await
    }

    /// Passes a request on to the server that replaced this one (`handover.rs`).
    async fn forward(&mut self, successor: &Path, call: &Call, msgid: u64) -> Vec<u8> {
        let service = Arc::clone(&self.service);
        let _counted = service.forwarding();
        if self.upstream.is_none() {
            match Upstream::connect(successor, self.max_frame).await {
                Ok(up) => self.upstream = Some(up),
                Err(e) => return handover::failed(msgid, &e.to_string()),
            }
        }
        let Some(up) = self.upstream.as_mut() else {
            return handover::failed(msgid, "no connection");
        };
        match up
            .forward(
                call,
                msgid,
                Hop::FromOlder,
                self.service.settings.event_timeout,
            )
            .await
        {
            Ok(out) => out,
            Err(why) => {
                self.upstream = None;
                handover::failed(msgid, &why)
            }
        }
    }

    /// Passes a Step back to the server this one replaced; None when that
    /// server cannot be reached (the Step then gets this server's answer).
    async fn pass_back(&mut self, link: &Path, call: &Call, msgid: u64) -> Option<Vec<u8>> {
        let service = Arc::clone(&self.service);
        let _counted = service.forwarding();
        if self.older.is_none() {
            match Upstream::connect(link, self.max_frame).await {
                Ok(up) => self.older = Some(up),
                Err(e) => {
                    handover::unreachable_older(link, &e);
                    return None;
                }
            }
        }
        let up = self.older.as_mut()?;
        match up
            .forward(
                call,
                msgid,
                Hop::FromNewer,
                self.service.settings.event_timeout,
            )
            .await
        {
            Ok(out) => Some(out),
            Err(why) => {
                self.older = None;
                Some(handover::failed(msgid, &why))
            }
        }
    }

    /// Answers a frame that could not be decoded.
    fn refuse_frame(&mut self, e: WireError) -> Next {
        self.greet();
        log::warn!("connection: {e}");
        let msgid = self
            .decoder
            .peek_msgid()
            .map_or(rmpv::Value::Nil, rmpv::Value::from);
        let mut out = Vec::new();
        rpc::write_error_raw(&mut out, &msgid, &e.to_string());
        let next = match e {
            // The frame is whole and its length known: skip it, go on.
            WireError::TooManyValues { len, .. } => {
                self.decoder.consume(len);
                Next::Continue
            }
            // The next frame boundary cannot be found: give up what came.
            WireError::Malformed(_) => {
                self.decoder.reset();
                Next::Continue
            }
            // The rest of an oversized frame is still coming, and a peer
            // over the budget holds memory others need: hang up.
            WireError::TooLarge { .. } | WireError::OverBudget { .. } => Next::Close,
        };
        match (self.send(&out), next) {
            (Next::Close, _) | (_, Next::Close) => Next::Close,
            _ => Next::Continue,
        }
    }

    fn send(&self, out: &[u8]) -> Next {
        if !out.is_empty() && self.writer.write_all(out).is_err() {
            log::debug!("connection closed before the reply was written");
            return Next::Close;
        }
        Next::Continue
    }
}

#[cfg(test)]
mod tests {
    //! `serve` on a socket pair: Kong's end is a blocking stream with a
    //! stock rmpv encoder, the service runs with a mock executor whose
    //! events come back to the test.

    use std::io::{BufReader, Write};
    use std::os::unix::net::UnixStream as StdStream;
    use std::sync::{mpsc, Mutex};
    use std::time::Duration;

    use rmpv::Value;

    use super::*;
    use crate::executor::{EventJob, Executor, PluginHandle, RemoteKey, RunsEvents};
    use crate::rpc::map;
    use crate::test_support::one_plugin_service;

    const MAX_FRAME: usize = 4096;

    /// Creates instances; hands each event to the test.
    struct Mock(Mutex<mpsc::Sender<EventJob>>);

    impl Executor for Mock {
        fn start_instance(&self, _plugin: &str, _config: &Value) -> Result<PluginHandle, String> {
            Ok(PluginHandle::Remote(RemoteKey::new(1, |_| {})))
        }

        fn running(&self) -> usize {
            0
        }
    }

    impl RunsEvents for Mock {
        fn run_event(&self, job: EventJob) {
            let _ = self.0.lock().expect("lock").send(job);
        }
    }

    /// Kong's end of a served connection.
    struct Kong {
        reader: BufReader<StdStream>,
        writer: StdStream,
        events: mpsc::Receiver<EventJob>,
        service: Arc<Service>,
        stop: watch::Sender<bool>,
        // Dropped last: the connection's task runs on it.
        _rt: tokio::runtime::Runtime,
    }

    impl Kong {
        fn connect() -> Kong {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let (ours, theirs) = StdStream::pair().expect("socketpair");
            theirs
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let (tx, events) = mpsc::channel();
            let mock = Arc::new(Mock(Mutex::new(tx)));
            let service = Arc::new(one_plugin_service(
                Duration::from_secs(5),
                Arc::clone(&mock) as crate::executor::SharedExecutor,
            ));
            let dispatcher = Arc::new(Dispatcher {
                service: Arc::clone(&service),
                runner: mock,
            });
            let (stop, stopped) = watch::channel(false);
            rt.spawn(async move {
                ours.set_nonblocking(true).expect("nonblocking");
                let stream = UnixStream::from_std(ours).expect("tokio stream");
                serve(stream, dispatcher, MAX_FRAME, stopped).await;
            });
            Kong {
                reader: BufReader::new(theirs.try_clone().expect("clone")),
                writer: theirs,
                events,
                service,
                stop,
                _rt: rt,
            }
        }

        fn send(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).expect("send");
        }

        fn request(&mut self, msgid: u64, method: &str, arg: Value) {
            self.send(&crate::test_support::request(msgid, method, arg));
        }

        /// The next frame from the server.
        fn read(&mut self) -> Value {
            rmpv::decode::read_value(&mut self.reader).expect("a frame")
        }

        /// The next frame is a reply: its msgid, error and result.
        fn reply(&mut self) -> (Value, Value, Value) {
            let Value::Array(items) = self.read() else {
                panic!("not an array");
            };
            assert_eq!(items.len(), 4);
            assert_eq!(items[0].as_u64(), Some(1), "a reply");
            let mut items = items.into_iter().skip(1);
            let mut next = || items.next().expect("item");
            (next(), next(), next())
        }

        /// Whether the server hung up (end of stream).
        fn closed(&mut self) -> bool {
            let mut byte = [0u8; 1];
            matches!(std::io::Read::read(&mut self.reader, &mut byte), Ok(0))
        }
    }

    #[test]
    fn the_first_reply_comes_after_one_server_pid_notification() {
        let mut kong = Kong::connect();
        kong.request(1, "plugin.GetStatus", Value::Nil);
        let hello = kong.read();
        assert_eq!(hello[0].as_u64(), Some(2));
        assert_eq!(hello[1].as_str(), Some("serverPid"));
        assert_eq!(hello[2].as_u64(), Some(u64::from(std::process::id())));
        let (msgid, error, result) = kong.reply();
        assert_eq!((msgid.as_u64(), error), (Some(1), Value::Nil));
        assert!(result.is_map(), "{result}");
        // Only once per connection.
        kong.request(2, "plugin.GetStatus", Value::Nil);
        assert_eq!(kong.reply().0.as_u64(), Some(2));
    }

    #[test]
    fn a_wrong_call_gets_an_error_with_its_msgid_and_the_connection_goes_on() {
        let mut kong = Kong::connect();
        kong.request(5, "plugin.Nope", Value::Nil);
        kong.read(); // serverPid
        let (msgid, error, result) = kong.reply();
        assert_eq!(msgid.as_u64(), Some(5));
        assert!(error.as_str().is_some_and(|e| !e.is_empty()), "{error}");
        assert_eq!(result, Value::Nil);
        kong.request(6, "plugin.GetStatus", Value::Nil);
        assert_eq!(kong.reply().1, Value::Nil);
    }

    #[test]
    fn a_malformed_frame_is_refused_and_what_came_after_it_dropped() {
        let mut kong = Kong::connect();
        // 0xc1 is never MessagePack: no boundary to find after it.
        kong.send(&[0xc1]);
        kong.read(); // serverPid
        let (msgid, error, _) = kong.reply();
        assert_eq!(msgid, Value::Nil);
        assert!(
            error.as_str().is_some_and(|e| e.contains("malformed")),
            "{error}"
        );
        // The connection still serves.
        kong.request(7, "plugin.GetStatus", Value::Nil);
        assert_eq!(kong.reply().0.as_u64(), Some(7));
    }

    #[test]
    fn an_oversized_frame_is_refused_and_the_connection_closed() {
        let mut kong = Kong::connect();
        let mut big = Vec::new();
        rmpv::encode::write_value(&mut big, &Value::from("x".repeat(2 * MAX_FRAME)))
            .expect("encode");
        kong.send(&big[..64]);
        kong.read(); // serverPid
        let (_, error, _) = kong.reply();
        assert!(
            error.as_str().is_some_and(|e| e.contains("too large")),
            "{error}"
        );
        assert!(kong.closed());
    }

    #[test]
    fn an_event_runs_pdk_calls_and_steps_over_the_connection() {
        let mut kong = Kong::connect();
        kong.request(
            1,
            "plugin.StartInstance",
            map(vec![
                ("Name", Value::from("p")),
                ("Config", Value::from("{}")),
            ]),
        );
        kong.read(); // serverPid
        let (_, error, started) = kong.reply();
        assert_eq!(error, Value::Nil);
        let instance = started["Id"].clone();
        kong.request(
            2,
            "plugin.HandleEvent",
            map(vec![
                ("InstanceId", instance),
                ("EventName", Value::from("access")),
            ]),
        );
        let job = kong
            .events
            .recv_timeout(Duration::from_secs(5))
            .expect("the event runs");
        let id = job.link.event_id;
        // The handler's PDK call answers the HandleEvent.
        let resumed = job
            .link
            .call("kong.request.get_path", &[0x90])
            .expect("sent");
        let (msgid, _, call) = kong.reply();
        assert_eq!(msgid.as_u64(), Some(2));
        assert_eq!(
            call["Data"]["Method"].as_str(),
            Some("kong.request.get_path")
        );
        // Kong's Step on the same connection resumes it.
        kong.request(
            3,
            "plugin.Step",
            map(vec![
                ("EventId", Value::from(id)),
                ("Data", Value::from("/a")),
            ]),
        );
        let resume = resumed.blocking_recv().expect("resumed");
        assert_eq!(resume.route.msgid, 3);
        job.link.resume(resume);
        job.link.done().expect("ret");
        let (msgid, _, ret) = kong.reply();
        assert_eq!(msgid.as_u64(), Some(3));
        assert_eq!(ret["Data"].as_str(), Some("ret"));
        assert_eq!(kong.service.events.len(), 0);
        // The connection serves on after the event.
        kong.request(4, "plugin.GetStatus", Value::Nil);
        assert_eq!(kong.reply().0.as_u64(), Some(4));
    }

    #[test]
    fn stopping_the_server_hangs_up_and_uncounts_the_connection() {
        let mut kong = Kong::connect();
        kong.request(1, "plugin.GetStatus", Value::Nil);
        kong.read();
        kong.reply();
        assert_eq!(kong.service.connections.load(Ordering::Acquire), 1);
        kong.stop.send(true).expect("stop");
        assert!(kong.closed());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while kong.service.connections.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline, "still counted");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_peer_that_hangs_up_is_let_go() {
        let mut kong = Kong::connect();
        kong.request(1, "plugin.GetStatus", Value::Nil);
        kong.read();
        kong.reply();
        let service = Arc::clone(&kong.service);
        assert_eq!(service.connections.load(Ordering::Acquire), 1);
        // Kong closes its end; the runtime stays up.
        let Kong {
            writer,
            reader,
            _rt,
            ..
        } = kong;
        drop((writer, reader));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while service.connections.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline, "still counted");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
