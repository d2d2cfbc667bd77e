//! The connections a looped server holds: each one's socket, frame decoder
//! and write buffer.
//!
//! Nothing here blocks and nothing here calls Python: reads take what the
//! socket has, writes send what the socket takes and keep the rest, and each
//! operation tells the caller what the loop must do next (watch the socket for
//! writability, stop or start reading it, forget it). As in the thread model
//! (`connection.rs`), a connection whose peer has not read a reply gets no
//! further request served until it has: its requests stay in the kernel's
//! buffer. What still waits for it is bounded per connection and for all of
//! them (`backlog.rs`); past that, or after [`STALLED_PEER`] without reading,
//! the connection is dropped, so a stuck peer costs little memory and never
//! the other connections' progress.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rmpv::Value;

use crate::backlog::Backlog;
use crate::rpc;
use crate::wire::{FrameDecoder, WireError};
pub use crate::writer::STALLED_PEER;

/// What arrived on a connection, in order.
pub enum Incoming {
    Frame(Value),
    /// A frame that could not be decoded: the msgid to answer (as far as it
    /// could be read) and why.
    Bad(Value, WireError),
}

/// What a connection has for the loop to serve next.
pub enum Next {
    /// A request (or a bad frame) to answer.
    Request(Incoming),
    /// No whole request is buffered: wait for the socket.
    Nothing,
    /// A reply is still waiting for the peer to read it: stop watching
    /// `RawFd` for reading until [`Conns::flush`] has sent it
    /// ([`Conns::resume`] says when).
    Pause(RawFd),
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
    /// This connection's share of the process's unread replies.
    backlog: Backlog,
    /// Since when a reply has waited for the peer (`None`: nothing waits).
    waiting_since: Option<Instant>,
    /// Not watched for reading while a reply waits ([`Next::Pause`]).
    paused: bool,
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
}

/// The next whole frame off a connection's decoder, or why the bytes there
/// are no frame (after which the decoder goes on past them, or the
/// connection is marked closing when it cannot).
fn split_frame(conn: &mut Conn) -> Option<Incoming> {
    let e = match conn.decoder.next_frame() {
        Ok(frame) => return frame.map(Incoming::Frame),
        Err(e) => e,
    };
    log::warn!("connection: {e}");
    let msgid = conn.decoder.peek_msgid().map_or(Value::Nil, Value::from);
    match e {
        // Whole and of known length: skip it, go on.
        WireError::TooManyValues { len, .. } => conn.decoder.consume(len),
        // No way to find the next frame: give up what came.
        WireError::Malformed(_) => conn.decoder.reset(),
        // The rest of an oversized frame is still coming, and a peer over
        // the budget holds memory others need.
        WireError::TooLarge { .. } | WireError::OverBudget { .. } => {
            conn.decoder.reset();
            conn.closing = true;
        }
    }
    Some(Incoming::Bad(msgid, e))
}

/// Why a connection is dropped when its peer is simply gone (not logged).
pub const CLOSED: &str = "connection closed";

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;
/// Most chunks one `read` takes: a peer that writes without pause gets its
/// share, the loop comes back for the rest (level-triggered).
const CHUNKS_PER_READ: usize = 16;

impl Conns {
    pub fn new(max_frame: usize) -> Self {
        Conns {
            map: HashMap::new(),
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
            next_id: 1,
            max_frame,
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
                backlog: Backlog::new(self.max_frame),
                waiting_since: None,
                paused: false,
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

    /// Reads what the socket has into the connection's decoder; true when
    /// the peer closed (or the socket failed): close once the requests
    /// already read are served.
    pub fn read(&mut self, id: u64) -> bool {
        let Some(conn) = self.map.get_mut(&id) else {
            return true;
        };
        if conn.closing || conn.paused {
            return false;
        }
        let chunk = &mut self.chunk;
        for _ in 0..CHUNKS_PER_READ {
            match conn.stream.read(chunk) {
                Ok(0) => {
                    // Kong's readiness probes (docs/protocol.md §1.3) connect and close.
                    if !conn.decoder.is_empty() {
                        log::debug!("connection closed in the middle of a message");
                    }
                    return true;
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
                    return true;
                }
            }
        }
        false
    }

    /// The next request to serve on a connection: one at a time, and none
    /// while a reply waits for the peer to read it.
    pub fn next(&mut self, id: u64) -> Next {
        let Some(conn) = self.map.get_mut(&id) else {
            return Next::Nothing;
        };
        if conn.sent < conn.out.len() {
            if !conn.paused {
                conn.paused = true;
                return Next::Pause(conn.stream.as_raw_fd());
            }
            return Next::Nothing;
        }
        if conn.closing {
            return Next::Nothing;
        }
        split_frame(conn).map_or(Next::Nothing, Next::Request)
    }

    /// After a flush that sent everything: the descriptor to watch for
    /// reading again, if reading was paused (then serve what `next` gives).
    pub fn resume(&mut self, id: u64) -> Option<RawFd> {
        let conn = self.map.get_mut(&id)?;
        if conn.paused && conn.sent == conn.out.len() {
            conn.paused = false;
            return Some(conn.stream.as_raw_fd());
        }
        None
    }

    /// Connections whose peer has left a reply unread for [`STALLED_PEER`].
    pub fn stalled(&self) -> Vec<u64> {
        self.map
            .iter()
            .filter(|(_, c)| c.waiting_since.is_some_and(|t| t.elapsed() >= STALLED_PEER))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Queues one whole reply (with the `serverPid` greeting in front of a
    /// connection's first, docs/protocol.md §2) and writes what the socket takes.
    pub fn send(&mut self, id: u64, bytes: &[u8]) -> Queued {
        let Some(conn) = self.map.get_mut(&id) else {
            return Queued::Drop(CLOSED.into());
        };
        let waiting = conn.out.len() - conn.sent;
        if !conn.greeted {
            conn.greeted = true;
            rpc::write_server_pid(&mut conn.out, std::process::id());
        }
        // The greeting and the reply are one message for the backlog.
        let adding = conn.out.len() - conn.sent - waiting + bytes.len();
        if let Err(overflow) = conn.backlog.admit(waiting, adding) {
            return Queued::Drop(overflow.to_string());
        }
        conn.out.extend_from_slice(bytes);
        conn.backlog.set(waiting + adding);
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
                Ok(n) => {
                    conn.sent += n;
                    conn.backlog.set(conn.out.len() - conn.sent);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.waiting_since.get_or_insert_with(Instant::now);
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
        conn.waiting_since = None;
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

    fn pair() -> (Conns, u64, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut conns = Conns::new(1024);
        let (id, _) = conns.add(ours).expect("add");
        (conns, id, theirs)
    }

    #[test]
    fn first_reply_is_greeted_and_frames_split() {
        let (mut conns, id, mut peer) = pair();
        assert!(matches!(conns.send(id, &[0xc0]), Queued::Done));
        let mut got = [0u8; 64];
        let n = peer.read(&mut got).expect("read");
        assert_eq!(got[0], 0x93, "serverPid notification first");
        assert_eq!(got[n - 1], 0xc0);
        peer.write_all(&[0x01, 0x02, 0xc1]).expect("write");
        assert!(!conns.read(id));
        assert!(matches!(conns.next(id), Next::Request(Incoming::Frame(_))));
        assert!(matches!(conns.next(id), Next::Request(Incoming::Frame(_))));
        assert!(matches!(
            conns.next(id),
            Next::Request(Incoming::Bad(Value::Nil, _))
        ));
        assert!(matches!(conns.next(id), Next::Nothing));
    }

    #[test]
    fn no_request_is_served_while_a_reply_waits_for_the_peer() {
        let (mut conns, id, mut peer) = pair();
        peer.write_all(&[0x01, 0x02]).expect("write");
        assert!(!conns.read(id));
        assert!(matches!(conns.next(id), Next::Request(_)));
        // A reply the socket cannot take whole: the rest waits.
        let big = vec![0xc0u8; 4 << 20];
        assert!(matches!(conns.send(id, &big), Queued::WatchWritable(_)));
        assert!(
            matches!(conns.next(id), Next::Pause(_)),
            "stop reading the peer"
        );
        assert!(matches!(conns.next(id), Next::Nothing));
        assert!(conns.resume(id).is_none(), "nothing was flushed yet");
        // The peer reads everything: reading resumes, the buffered request is served.
        let mut sink = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < big.len() {
            let _ = conns.flush(id);
            got += peer.read(&mut sink).expect("read");
        }
        while !matches!(conns.flush(id), Queued::Done) {}
        assert!(conns.resume(id).is_some());
        assert!(matches!(conns.next(id), Next::Request(_)));
    }

    #[test]
    fn a_peer_that_never_reads_is_dropped_past_one_reply_and_the_allowance() {
        let (mut conns, id, _peer) = pair();
        let block = vec![0u8; 16 * 1024];
        let mut sent = 0;
        let outcome = loop {
            match conns.send(id, &block) {
                Queued::Drop(why) => break why,
                _ => sent += block.len(),
            }
            assert!(sent < 64 << 20, "never dropped");
        };
        assert!(outcome.contains("unread"), "{outcome}");
        assert!(sent < 4 << 20, "dropped after {sent} bytes");
    }
}
