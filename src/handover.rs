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

use crate::rpc::{self, Method, Request, StepArgs};
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
    /// method reads only the first).
    pub fn of(req: &Request) -> Hop {
        match req.params.get(1).and_then(Value::as_str) {
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

/// Whether a request is served here (a Step of one of our own events in
/// flight) rather than forwarded.
pub fn served_here(req: &Request, is_ours: impl Fn(u64) -> bool) -> bool {
    match Method::parse(&req.method) {
        Ok(Method::Step { .. }) => {
            StepArgs::parse(req.params.first()).is_ok_and(|step| is_ours(step.event_id))
        }
        // Kong ignores CloseInstance answers; ours knows our ids.
        Ok(Method::CloseInstance | Method::GetStatus | Method::GetPluginInfo) => true,
        _ => false,
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
        req: &Request,
        hop: Hop,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let bytes = encode_request(req, hop)?;
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
        req: &Request,
        hop: Hop,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        use std::io::{Read, Write};
        let bytes = encode_request(req, hop)?;
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

fn encode_request(req: &Request, hop: Hop) -> Result<Vec<u8>, String> {
    let mut params: Vec<Value> = req.params.iter().take(1).cloned().collect();
    if let Some(mark) = hop.mark() {
        if params.is_empty() {
            params.push(Value::Nil);
        }
        params.push(Value::from(mark));
    }
    let request = Value::Array(vec![
        Value::from(0),
        Value::from(req.msgid),
        Value::from(req.method.as_str()),
        Value::Array(params),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &request).map_err(|e| e.to_string())?;
    Ok(bytes)
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

    fn step(params: Vec<Value>) -> Request {
        Request {
            msgid: 7,
            method: "plugin.Step".into(),
            params,
        }
    }

    fn decoded(bytes: &[u8]) -> Request {
        let value = rmpv::decode::read_value(&mut &bytes[..]).expect("one message");
        crate::rpc::parse_request(value).expect("a request")
    }

    #[test]
    fn a_forwarded_request_carries_its_direction_and_kongs_never_does() {
        let arg = Value::Map(vec![(Value::from("EventId"), Value::from(5))]);
        let from_kong = step(vec![arg.clone()]);
        assert_eq!(Hop::of(&from_kong), Hop::Kong);
        for hop in [Hop::FromOlder, Hop::FromNewer] {
            let sent = decoded(&encode_request(&from_kong, hop).expect("encoded"));
            assert_eq!(Hop::of(&sent), hop);
            assert_eq!(sent.params.first(), Some(&arg));
            // Passed on again, it carries the new direction only.
            let again = decoded(&encode_request(&sent, Hop::FromOlder).expect("encoded"));
            assert_eq!(again.params.len(), 2);
            assert_eq!(Hop::of(&again), Hop::FromOlder);
        }
        // A peer's second parameter that is not our mark is Kong's.
        assert_eq!(Hop::of(&step(vec![arg, Value::from("x")])), Hop::Kong);
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
