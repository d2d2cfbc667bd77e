//! The connections a looped server holds: each one's socket, frame decoder
//! and write buffer.
//!
//! Nothing here blocks and nothing here calls Python: reads take what the
//! socket has, writes send what the socket takes and keep the rest, and each
//! operation tells the caller what the loop must do next (watch the socket for
//! writability, forget it). A peer that stops reading can make its buffer grow
//! only up to a bound; past it the connection is dropped, so a stuck peer
//! costs memory, never the other connections' progress.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use rmpv::Value;

use crate::rpc;
use crate::wire::{FrameDecoder, WireError};

/// What arrived on a connection, in order.
pub enum Incoming {
    Frame(Value),
    /// A frame that could not be decoded: the msgid to answer (as far as it
    /// could be read) and why.
    Bad(Value, WireError),
}

/// The result of reading a readable connection.
pub struct Received {
    pub incoming: Vec<Incoming>,
    /// The peer closed (or the socket failed): close once `incoming` is served.
    pub ended: bool,
}

/// What the loop must do after a write.
pub enum Queued {
    /// Everything went out, or the socket was already watched for writing.
    Done,
    /// Bytes are left over: watch the descriptor for writability.
    WatchWritable(RawFd),
    /// The connection is gone or over its bound: close it.
    Drop(String),
}

struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    greeted: bool,
    watching_writes: bool,
    /// Hang up once `out` is flushed (after an oversized frame).
    closing: bool,
}

pub struct Conns {
    map: HashMap<u64, Conn>,
    /// Where reads land before the decoder takes them (allocated once: a
    /// fresh zeroed buffer per read costs more than the read).
    chunk: Box<[u8]>,
    next_id: u64,
    max_frame: usize,
    /// Most bytes kept for a peer that does not read.
    out_limit: usize,
}

/// Why a connection is dropped when its peer is simply gone (not logged).
pub const CLOSED: &str = "connection closed";

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;

impl Conns {
    pub fn new(max_frame: usize, out_limit: usize) -> Self {
        Conns {
            map: HashMap::new(),
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
            next_id: 1,
            max_frame,
            out_limit,
        }
    }

    /// Takes a new connection; returns its id (never reused, unlike fds).
    pub fn add(&mut self, stream: UnixStream) -> io::Result<(u64, RawFd)> {
        stream.set_nonblocking(true)?;
        let id = self.next_id;
        self.next_id += 1;
        let fd = stream.as_raw_fd();
        self.map.insert(
            id,
            Conn {
                stream,
                decoder: FrameDecoder::new(self.max_frame),
                out: Vec::new(),
                sent: 0,
                greeted: false,
                watching_writes: false,
                closing: false,
            },
        );
        Ok((id, fd))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.map.keys().copied().collect()
    }

    /// Removes a connection; the caller stops watching the returned
    /// descriptor, then drops the stream (which closes it).
    pub fn remove(&mut self, id: u64) -> Option<UnixStream> {
        self.map.remove(&id).map(|c| c.stream)
    }

    /// Reads what the socket has and splits it into frames.
    pub fn read(&mut self, id: u64) -> Received {
        let mut result = Received {
            incoming: Vec::new(),
            ended: false,
        };
        let Some(conn) = self.map.get_mut(&id) else {
            result.ended = true;
            return result;
        };
        if conn.closing {
            return result;
        }
        let chunk = &mut self.chunk;
        loop {
            match conn.stream.read(chunk) {
                Ok(0) => {
                    // Kong's readiness probes (docs/protocol.md §1.3) connect and close.
                    if !conn.decoder.is_empty() {
                        log::debug!("connection closed in the middle of a message");
                    }
                    result.ended = true;
                    break;
                }
                Ok(n) => {
                    conn.decoder.extend(&chunk[..n]);
                    // A short read emptied the socket; the loop calls again
                    // if more comes (level-triggered), saving an EAGAIN read.
                    if n < CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("connection read failed: {e}");
                    result.ended = true;
                    break;
                }
            }
        }
        loop {
            match conn.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => result.incoming.push(Incoming::Frame(frame)),
                Err(e) => {
                    log::warn!("connection: {e}");
                    let msgid = conn.decoder.peek_msgid().map_or(Value::Nil, Value::from);
                    let fatal = match e {
                        // Whole and of known length: skip it, go on.
                        WireError::TooManyValues { len, .. } => {
                            conn.decoder.consume(len);
                            false
                        }
                        // No way to find the next frame: give up what came.
                        WireError::Malformed(_) => {
                            conn.decoder.reset();
                            false
                        }
                        // The rest of an oversized frame is still coming, and
                        // a peer over the budget holds memory others need.
                        WireError::TooLarge { .. } | WireError::OverBudget { .. } => {
                            conn.decoder.reset();
                            true
                        }
                    };
                    result.incoming.push(Incoming::Bad(msgid, e));
                    if fatal {
                        conn.closing = true;
                        break;
                    }
                }
            }
        }
        result
    }

    /// Queues one whole reply (with the `serverPid` greeting in front of a
    /// connection's first, docs/protocol.md §2) and writes what the socket takes.
    pub fn send(&mut self, id: u64, bytes: &[u8]) -> Queued {
        let Some(conn) = self.map.get_mut(&id) else {
            return Queued::Drop(CLOSED.into());
        };
        if !conn.greeted {
            conn.greeted = true;
            rpc::write_server_pid(&mut conn.out, std::process::id());
        }
        conn.out.extend_from_slice(bytes);
        if conn.out.len() - conn.sent > self.out_limit {
            return Queued::Drop(format!(
                "peer is not reading: more than {} bytes of replies pending",
                self.out_limit
            ));
        }
        if conn.watching_writes {
            return Queued::Done;
        }
        self.flush(id)
    }

    /// Writes buffered bytes; called when the socket is writable.
    pub fn flush(&mut self, id: u64) -> Queued {
        let Some(conn) = self.map.get_mut(&id) else {
            return Queued::Drop(CLOSED.into());
        };
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return Queued::Drop(CLOSED.into()),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if conn.watching_writes {
                        return Queued::Done;
                    }
                    conn.watching_writes = true;
                    return Queued::WatchWritable(conn.stream.as_raw_fd());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Kong went away (a worker exiting, a closed pool connection).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Queued::Drop(CLOSED.into())
                }
                Err(e) => return Queued::Drop(format!("write failed: {e}")),
            }
        }
        conn.out.clear();
        conn.sent = 0;
        if conn.closing {
            return Queued::Drop("closed after an oversized message".into());
        }
        Queued::Done
    }

    /// After a flush that emptied the buffer: stop watching for writability.
    /// Returns the descriptor to unwatch, if it was watched.
    pub fn settle(&mut self, id: u64) -> Option<RawFd> {
        let conn = self.map.get_mut(&id)?;
        if conn.watching_writes && conn.sent == conn.out.len() {
            conn.watching_writes = false;
            return Some(conn.stream.as_raw_fd());
        }
        None
    }

    /// Whether the connection is to be closed (after an oversized frame:
    /// its error reply was sent without waiting, the rest cannot be framed).
    pub fn is_closing(&self, id: u64) -> bool {
        self.map.get(&id).is_some_and(|c| c.closing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limit: usize) -> (Conns, u64, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut conns = Conns::new(1024, limit);
        let (id, _) = conns.add(ours).expect("add");
        (conns, id, theirs)
    }

    #[test]
    fn first_reply_is_greeted_and_frames_split() {
        let (mut conns, id, mut peer) = pair(1 << 20);
        assert!(matches!(conns.send(id, &[0xc0]), Queued::Done));
        let mut got = [0u8; 64];
        let n = peer.read(&mut got).expect("read");
        assert_eq!(got[0], 0x93, "serverPid notification first");
        assert_eq!(got[n - 1], 0xc0);
        peer.write_all(&[0x01, 0x02, 0xc1]).expect("write");
        let read = conns.read(id);
        assert_eq!(read.incoming.len(), 3);
        assert!(matches!(read.incoming[2], Incoming::Bad(Value::Nil, _)));
        assert!(!read.ended);
    }

    #[test]
    fn a_peer_that_never_reads_is_dropped_past_the_bound() {
        let (mut conns, id, _peer) = pair(64 * 1024);
        let block = vec![0u8; 16 * 1024];
        let mut outcome = Queued::Done;
        for _ in 0..1000 {
            outcome = conns.send(id, &block);
            if matches!(outcome, Queued::Drop(_)) {
                break;
            }
        }
        assert!(matches!(outcome, Queued::Drop(_)));
    }
}
