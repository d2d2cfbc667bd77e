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
