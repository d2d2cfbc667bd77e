//! A server that a newer one replaced on its socket path (`--reload`) passes
//! Kong's new work on to it.
//!
//! Kong keeps reusing its pooled connections to the old server
//! (docs/protocol.md §2), and a server that closed them could cross a request
//! Kong is writing at that moment: that request would be lost. So the old
//! server keeps every connection open and, on each one, forwards to the newer
//! server whatever is not a Step of its own events in flight: StartInstance,
//! HandleEvent, the Steps of events the newer server runs. The newer server's
//! `serverPid` notification goes back to Kong with the first forwarded reply,
//! so Kong drops the instance ids of the old server (§2, "Notifications").
//! The old server exits once its events have ended and Kong has closed its
//! connections. Past `--drain-timeout` it does not cut a connection Kong
//! still sends requests on (that would lose the event in the middle of it):
//! it waits until no request has arrived for a moment and none is being
//! passed on, then stops (`cli.py`, `_kong_still_busy_here`).
//!
//! The other way round, a Step of an old event that Kong sends on a new
//! connection reaches the newer server, which does not know the event: it
//! passes the Step back to the server it replaced, through a hard link to
//! that server's socket made before taking the path (`predecessor_link`).
//! In the looped model the newer server's loop waits for that one Step.
//!
//! A forwarded request is marked ([`Hop`]) so that it is never passed back
//! the way it came: requests go forward to newer servers or back to older
//! ones, never in a loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::rpc::{self, Call};
use crate::rpc_error::RpcError;
use crate::wire::FrameDecoder;

/// Where a request comes from: Kong, or another server of ours passing it on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Hop {
    Kong,
    /// Passed on by a server this one replaced: served here, never passed on.
    FromOlder,
    /// Passed back by the server that replaced this one: served here, or
    /// passed further back.
    FromNewer,
}

const FROM_OLDER: &str = "kong_pdk:from-older";
const FROM_NEWER: &str = "kong_pdk:from-newer";

impl Hop {
    /// The mark is a second parameter, which Kong never sends (every
    /// method reads only the first): a request's `tag` (`rpc::Request`).
    pub fn of(tag: Option<&str>) -> Hop {
        match tag {
            Some(FROM_OLDER) => Hop::FromOlder,
            Some(FROM_NEWER) => Hop::FromNewer,
            _ => Hop::Kong,
        }
    }

    fn mark(self) -> Option<&'static str> {
        match self {
            Hop::Kong => None,
            Hop::FromOlder => Some(FROM_OLDER),
            Hop::FromNewer => Some(FROM_NEWER),
        }
    }
}

/// The name under which a server that takes a live server's socket path
/// keeps that server reachable: a hard link to its socket file (a Unix
/// socket is reached through its inode, under any name). The old server
/// removes it when it stops.
pub fn predecessor_link(path: &Path, inode: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{inode}.old"));
    PathBuf::from(name)
}

/// Whether a replaced server serves `call` itself (a Step of one of its
/// own events in flight) rather than passing it on.
fn served_here(call: &Call, is_ours: impl Fn(u64) -> bool) -> bool {
    match call {
        Call::Step { event, .. } => is_ours(*event),
        // Kong ignores CloseInstance answers; ours knows our ids.
        Call::CloseInstance { .. } | Call::GetStatus | Call::GetPluginInfo { .. } => true,
        _ => false,
    }
}

/// The servers next to this one on its socket path: the newer one that
/// replaced it, and the older one it replaced.
#[derive(Clone, Copy, Default)]
pub struct Neighbours<'a> {
    pub successor: Option<&'a Path>,
    pub predecessor: Option<&'a Path>,
}

impl<'a> Neighbours<'a> {
    /// Before serving: the newer server, when this one was replaced and
    /// `call` (from Kong) is new work for it.
    pub fn forward_before(
        &self,
        call: &Call,
        hop: Hop,
        is_ours: impl Fn(u64) -> bool,
    ) -> Option<&'a Path> {
        match (self.successor, hop) {
            (Some(successor), Hop::Kong) if !served_here(call, is_ours) => Some(successor),
            _ => None,
        }
    }

    /// After serving: where a call refused with `error` goes instead, and
    /// in which direction. New work refused because draining began after
    /// [`forward_before`](Self::forward_before) goes to the newer server; a
    /// Step (or AbandonEvent) of an event unknown here goes back to the
    /// older server, unless it came from there.
    pub fn pass_after(&self, error: &RpcError, hop: Hop) -> Option<(&'a Path, Hop)> {
        match error {
            RpcError::HandedOver => self.successor.map(|s| (s, Hop::FromOlder)),
            RpcError::UnknownEvent(_) if hop != Hop::FromOlder => {
                self.predecessor.map(|p| (p, Hop::FromNewer))
            }
            _ => None,
        }
    }

    /// Whether a handler's thread that holds a lent connection serves
    /// `call` (from Kong) itself (`events/lent.rs`): a HandleEvent or a Step
    /// of this server's, which no other server could want. Everything else
    /// goes back to the connection's I/O task, which can pass calls on.
    pub fn served_on_lent(&self, call: &Call, is_ours: impl Fn(u64) -> bool) -> bool {
        if self.successor.is_some() {
            return false;
        }
        match call {
            Call::HandleEvent { .. } => true,
            Call::Step { event, .. } => self.predecessor.is_none() || is_ours(*event),
            _ => false,
        }
    }
}

/// One connection's link to the newer server, opened on first use.
pub struct Upstream {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Upstream {
    pub async fn connect(path: &Path, max_frame: usize) -> std::io::Result<Upstream> {
        Ok(Upstream {
            stream: UnixStream::connect(path).await?,
            decoder: FrameDecoder::new(max_frame),
        })
    }

    /// Sends one request and returns the bytes to pass back to Kong: the
    /// newer server's notifications, then its reply.
    pub async fn forward(
        &mut self,
        call: &Call,
        msgid: u64,
        hop: Hop,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let bytes = encode_request(call, msgid, hop);
        let exchange = async {
            self.stream
                .write_all(&bytes)
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                if take_frames(&mut self.decoder, &mut out, hop)? {
                    return Ok(out);
                }
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err(CLOSED.to_string());
                }
                self.decoder.extend(&chunk[..n]);
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

/// The same link for the looped model, whose loop thread blocks on it: that
/// loop only runs the old server's own events by then.
pub struct BlockingUpstream {
    stream: std::os::unix::net::UnixStream,
    decoder: FrameDecoder,
}

impl BlockingUpstream {
    pub fn connect(path: &Path, max_frame: usize) -> std::io::Result<BlockingUpstream> {
        Ok(BlockingUpstream {
            stream: std::os::unix::net::UnixStream::connect(path)?,
            decoder: FrameDecoder::new(max_frame),
        })
    }

    pub fn forward(
        &mut self,
        call: &Call,
        msgid: u64,
        hop: Hop,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        use std::io::{Read, Write};
        let bytes = encode_request(call, msgid, hop);
        let deadline = std::time::Instant::now() + timeout;
        self.stream.write_all(&bytes).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if take_frames(&mut self.decoder, &mut out, hop)? {
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {timeout:?}"));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = self.stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(CLOSED.to_string());
            }
            self.decoder.extend(&chunk[..n]);
        }
    }
}

const CLOSED: &str = "the other server closed the connection";

/// The call as a request to another server of ours, marked with the
/// direction it goes.
fn encode_request(call: &Call, msgid: u64, hop: Hop) -> Vec<u8> {
    let mut bytes = Vec::new();
    call.write_request(&mut bytes, msgid, hop.mark());
    bytes
}

/// Moves the whole frames decoded so far to `out`; true once the reply
/// (after any notifications) is there. The notifications of an older
/// server (its `serverPid`) are left out: Kong must keep the newer one's.
fn take_frames(decoder: &mut FrameDecoder, out: &mut Vec<u8>, hop: Hop) -> Result<bool, String> {
    while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
        let is_reply = matches!(&frame, Value::Array(items)
            if items.first().and_then(Value::as_u64) == Some(1));
        if !is_reply && hop == Hop::FromNewer {
            continue;
        }
        rmpv::encode::write_value(out, &frame).map_err(|e| e.to_string())?;
        if is_reply {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The error reply when forwarding failed.
pub fn failed(msgid: u64, why: &str) -> Vec<u8> {
    log::warn!("forwarding to the other plugin server failed: {why}");
    let mut out = Vec::new();
    rpc::write_error(
        &mut out,
        msgid,
        &format!("forwarding to the other plugin server failed: {why}"),
    );
    out
}

/// The older server cannot be reached: the Step gets this server's own
/// answer (the event is unknown here). A link whose server is gone is
/// removed.
pub fn unreachable_older(link: &Path, why: &std::io::Error) {
    if why.kind() == std::io::ErrorKind::ConnectionRefused {
        let _ = std::fs::remove_file(link);
    }
    log::debug!("passing a Step back to {} failed: {why}", link.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(event: u64) -> Call {
        Call::Step {
            event,
            data: Some(Value::from(1)),
            error: false,
        }
    }

    fn decoded(bytes: &[u8]) -> rpc::Request {
        let value = rmpv::decode::read_value(&mut &bytes[..]).expect("one message");
        rpc::parse_request(value).expect("a request")
    }

    #[test]
    fn a_forwarded_request_carries_its_direction_and_kongs_never_does() {
        assert_eq!(Hop::of(None), Hop::Kong);
        // A peer's second parameter that is not our mark is Kong's.
        assert_eq!(Hop::of(Some("x")), Hop::Kong);
        for hop in [Hop::FromOlder, Hop::FromNewer] {
            let sent = decoded(&encode_request(&step(5), 7, hop));
            assert_eq!(Hop::of(sent.tag.as_deref()), hop);
            assert_eq!((sent.msgid, sent.call), (7, Ok(step(5))));
        }
        let plain = decoded(&encode_request(&Call::GetStatus, 3, Hop::Kong));
        assert_eq!((plain.tag, plain.call), (None, Ok(Call::GetStatus)));
    }

    const NEWER: &str = "/run/new.sock";
    const OLDER: &str = "/run/old.sock";

    fn replaced() -> Neighbours<'static> {
        Neighbours {
            successor: Some(Path::new(NEWER)),
            predecessor: None,
        }
    }

    fn replacing() -> Neighbours<'static> {
        Neighbours {
            successor: None,
            predecessor: Some(Path::new(OLDER)),
        }
    }

    fn start() -> Call {
        Call::StartInstance {
            name: "p".into(),
            config: Value::Nil,
        }
    }

    fn event() -> Call {
        Call::HandleEvent {
            instance: 1,
            phase: "access".into(),
        }
    }

    #[test]
    fn a_replaced_server_passes_new_work_on_and_keeps_its_own_steps() {
        let ours = |id| id == 5;
        let n = replaced();
        for call in [start(), event(), step(6), Call::InstanceStatus { id: 1 }] {
            assert_eq!(
                n.forward_before(&call, Hop::Kong, ours),
                Some(Path::new(NEWER)),
                "{call:?}"
            );
            // Passed back from a newer server, or on from an older one: served here.
            assert_eq!(n.forward_before(&call, Hop::FromNewer, ours), None);
            assert_eq!(n.forward_before(&call, Hop::FromOlder, ours), None);
        }
        for call in [step(5), Call::CloseInstance { id: 1 }, Call::GetStatus] {
            assert_eq!(n.forward_before(&call, Hop::Kong, ours), None, "{call:?}");
        }
        // Nobody replaced this server: everything is served here.
        assert_eq!(
            Neighbours::default().forward_before(&start(), Hop::Kong, ours),
            None
        );
        assert_eq!(replacing().forward_before(&start(), Hop::Kong, ours), None);
    }

    #[test]
    fn refused_calls_go_forward_or_back_never_the_way_they_came() {
        let handed_over = RpcError::HandedOver;
        let unknown = RpcError::UnknownEvent(9);
        assert_eq!(
            replaced().pass_after(&handed_over, Hop::FromOlder),
            Some((Path::new(NEWER), Hop::FromOlder))
        );
        assert_eq!(
            replacing().pass_after(&unknown, Hop::Kong),
            Some((Path::new(OLDER), Hop::FromNewer))
        );
        assert_eq!(
            replacing().pass_after(&unknown, Hop::FromNewer),
            Some((Path::new(OLDER), Hop::FromNewer))
        );
        assert_eq!(replacing().pass_after(&unknown, Hop::FromOlder), None);
        assert_eq!(replaced().pass_after(&unknown, Hop::Kong), None);
        assert_eq!(replacing().pass_after(&handed_over, Hop::Kong), None);
        assert_eq!(
            replacing().pass_after(&RpcError::NoInstance(1), Hop::Kong),
            None
        );
    }

    #[test]
    fn a_lent_connection_serves_only_what_no_other_server_wants() {
        let ours = |id| id == 5;
        let alone = Neighbours::default();
        assert!(alone.served_on_lent(&event(), ours));
        assert!(alone.served_on_lent(&step(6), ours));
        assert!(!alone.served_on_lent(&start(), ours));
        assert!(!alone.served_on_lent(&Call::GetStatus, ours));
        // After a reload, an unknown event's Step may be the older server's.
        assert!(replacing().served_on_lent(&step(5), ours));
        assert!(!replacing().served_on_lent(&step(6), ours));
        assert!(replacing().served_on_lent(&event(), ours));
        // A replaced server's I/O task passes work on.
        assert!(!replaced().served_on_lent(&event(), ours));
        assert!(!replaced().served_on_lent(&step(5), ours));
    }

    #[test]
    fn an_older_servers_greeting_is_not_passed_back() {
        let mut bytes = Vec::new();
        rpc::write_server_pid(&mut bytes, 42);
        rpc::write_ok(&mut bytes, 7, &Value::from("ok"));
        for (hop, frames) in [(Hop::FromNewer, 1), (Hop::FromOlder, 2)] {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.extend(&bytes);
            let mut out = Vec::new();
            assert!(take_frames(&mut decoder, &mut out, hop).expect("frames"));
            let mut rest = &out[..];
            let mut n = 0;
            while !rest.is_empty() {
                rmpv::decode::read_value(&mut rest).expect("a frame");
                n += 1;
            }
            assert_eq!(n, frames, "{hop:?}");
        }
    }
}
