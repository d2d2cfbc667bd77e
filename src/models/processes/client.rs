//! The core's MessagePack-RPC client towards its workers: one connection,
//! request framing and the shapes of the workers' replies (docs/protocol.md §3.1,
//! §4.1). The core plays Kong towards the workers, so this is the Kong side of
//! the same protocol.

use std::io;

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::rpc::{self, as_map, as_u64, field};
use crate::wire::FrameDecoder;

/// One connection to a worker. Like Kong's, it carries one request at a time
/// (docs/protocol.md §2) and may carry requests of any event.
pub(super) struct Conn {
    pub(super) stream: UnixStream,
    pub(super) decoder: FrameDecoder,
    pub(super) msgid: u64,
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) chunk: Vec<u8>,
}

/// Why an RPC to a worker failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Nothing reached the worker (connect or write failed): the request was
    /// not run, so it may go to another worker.
    Undelivered(String),
    /// The worker went away, or answered nonsense, after the request was sent.
    Lost(String),
    /// The worker answered with an RPC error.
    Remote(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Undelivered(e) | Failure::Lost(e) | Failure::Remote(e) => f.write_str(e),
        }
    }
}

impl Conn {
    /// Whether the worker has not closed this idle connection. A worker that
    /// died closed all its connections, so the pool hands out no dead ones
    /// (a request written to one could not be told apart from a lost one).
    pub(super) fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    pub(super) async fn request(
        &mut self,
        method: &str,
        params: &[Value],
    ) -> Result<Value, Failure> {
        self.msgid = self.msgid.wrapping_add(1);
        let request = encode_request(self.msgid, method, params);
        self.roundtrip(&request).await
    }

    async fn roundtrip(&mut self, request: &[u8]) -> Result<Value, Failure> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| Failure::Undelivered(format!("cannot write: {e}")))?;
        loop {
            while let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|e| Failure::Lost(format!("bad reply: {e}")))?
            {
                match parse_reply(frame, self.msgid) {
                    Incoming::ServerPid(pid) if pid == u64::from(self.pid) => {}
                    Incoming::ServerPid(pid) => {
                        return Err(Failure::Lost(format!(
                            "connected to pid {pid}, expected worker pid {}",
                            self.pid
                        )))
                    }
                    Incoming::Notification => {}
                    Incoming::Reply(result) => return result,
                    Incoming::Invalid(why) => return Err(Failure::Lost(why)),
                }
            }
            let n = self
                .stream
                .read(&mut self.chunk)
                .await
                .map_err(|e| Failure::Lost(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(Failure::Lost("the worker closed the connection".into()));
            }
            self.decoder.extend(&self.chunk[..n]);
        }
    }
}

/// `[0, msgid, method, params]` (docs/protocol.md §3.1).
pub(super) fn encode_request(msgid: u64, method: &str, params: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, 0);
    let _ = rmp::encode::write_uint(&mut out, msgid);
    rpc::write_str(&mut out, method);
    let _ = rmp::encode::write_array_len(&mut out, params.len() as u32);
    for p in params {
        rpc::write_value(&mut out, p);
    }
    out
}

pub(super) enum Incoming {
    ServerPid(u64),
    Notification,
    Reply(Result<Value, Failure>),
    Invalid(String),
}

/// Reads a frame from a worker: a reply `[1, msgid, error, result]` or a
/// notification `[2, label, args]` in front of it (docs/protocol.md §2, §3.1).
pub(super) fn parse_reply(frame: Value, msgid: u64) -> Incoming {
    let Value::Array(items) = frame else {
        return Incoming::Invalid("reply is not an array".into());
    };
    match (items.first().and_then(as_u64), items.len()) {
        (Some(2), 3) => match (items[1].as_str(), &items[2]) {
            (Some("serverPid"), Value::String(s)) => s
                .as_str()
                .and_then(|s| s.parse().ok())
                .map_or(Incoming::Notification, Incoming::ServerPid),
            (Some("serverPid"), pid) => {
                as_u64(pid).map_or(Incoming::Notification, Incoming::ServerPid)
            }
            _ => Incoming::Notification,
        },
        (Some(1), 4) => {
            if as_u64(&items[1]) != Some(msgid) {
                return Incoming::Invalid(format!(
                    "reply to msgid {} instead of {msgid}",
                    items[1]
                ));
            }
            Incoming::Reply(match &items[2] {
                Value::Nil => Ok(items[3].clone()),
                Value::String(s) => Err(Failure::Remote(
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                )),
                other => Err(Failure::Remote(other.to_string())),
            })
        }
        _ => Incoming::Invalid(
            "reply is neither [1, msgid, error, result] nor a notification".into(),
        ),
    }
}

/// What an event's worker said: `"ret"` or a PDK call.
pub(super) enum Output {
    Ret,
    Call { method: String, args: Vec<u8> },
}

/// `{Data, EventId}` from a HandleEvent or Step reply (docs/protocol.md §4.1).
pub(super) fn parse_output(result: &Value) -> Result<(Output, u64), String> {
    let entries = as_map(result).ok_or("event reply is not a map")?;
    let event_id = field(entries, "EventId")
        .and_then(as_u64)
        .ok_or("event reply has no EventId")?;
    let data = field(entries, "Data").ok_or("event reply has no Data")?;
    if data.as_str() == Some("ret") {
        return Ok((Output::Ret, event_id));
    }
    let call = as_map(data).ok_or("event reply Data is neither \"ret\" nor a call")?;
    let method = field(call, "Method")
        .and_then(Value::as_str)
        .ok_or("PDK call without a Method")?
        .to_string();
    let mut args = Vec::with_capacity(32);
    rpc::write_value(
        &mut args,
        field(call, "Args").unwrap_or(&Value::Array(Vec::new())),
    );
    Ok((Output::Call { method, args }, event_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::map;

    #[test]
    fn request_bytes() {
        let out = encode_request(3, "plugin.Step", &[map(vec![("EventId", Value::from(7))])]);
        let v = rmpv::decode::read_value(&mut &out[..]).expect("msgpack");
        assert_eq!(v[0].as_u64(), Some(0));
        assert_eq!(v[1].as_u64(), Some(3));
        assert_eq!(v[2].as_str(), Some("plugin.Step"));
        assert_eq!(v[3][0]["EventId"].as_u64(), Some(7));
    }

    #[test]
    fn replies_and_notifications() {
        let pid = Value::Array(vec![2.into(), "serverPid".into(), 42.into()]);
        assert!(matches!(parse_reply(pid, 1), Incoming::ServerPid(42)));
        let pid = Value::Array(vec![2.into(), "serverPid".into(), "43".into()]);
        assert!(matches!(parse_reply(pid, 1), Incoming::ServerPid(43)));
        let ok = Value::Array(vec![1.into(), 5.into(), Value::Nil, "x".into()]);
        assert!(matches!(
            parse_reply(ok, 5),
            Incoming::Reply(Ok(Value::String(_)))
        ));
        let err = Value::Array(vec![1.into(), 5.into(), "boom".into(), Value::Nil]);
        assert!(matches!(
            parse_reply(err, 5),
            Incoming::Reply(Err(Failure::Remote(e))) if e == "boom"
        ));
        let wrong = Value::Array(vec![1.into(), 6.into(), Value::Nil, Value::Nil]);
        assert!(matches!(parse_reply(wrong, 5), Incoming::Invalid(_)));
        assert!(matches!(
            parse_reply(Value::from(1), 5),
            Incoming::Invalid(_)
        ));
    }

    #[test]
    fn event_outputs() {
        let ret = map(vec![("Data", "ret".into()), ("EventId", 9.into())]);
        assert!(matches!(parse_output(&ret), Ok((Output::Ret, 9))));
        let call = map(vec![
            (
                "Data",
                map(vec![
                    ("Method", "kong.request.get_header".into()),
                    ("Args", Value::Array(vec!["host".into()])),
                ]),
            ),
            ("EventId", 9.into()),
        ]);
        match parse_output(&call) {
            Ok((Output::Call { method, args }, 9)) => {
                assert_eq!(method, "kong.request.get_header");
                assert_eq!(args, vec![0x91, 0xa4, b'h', b'o', b's', b't']);
            }
            _ => panic!("not a call"),
        }
        assert!(parse_output(&Value::from("ret")).is_err());
    }
}
