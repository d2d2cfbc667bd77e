//! MessagePack framing on the plugin socket.
//!
//! Kong writes msgpack objects back to back with no length prefix
//! (docs/protocol.md §3.1), so a frame ends where its object ends. The
//! decoder first *scans* the buffer to learn whether one whole object is there
//! (an iterative walk over markers and lengths: no allocation, no recursion,
//! bounded by the frame limit), and only then decodes it with `rmpv`. Nothing
//! here panics on bytes from the socket: every malformed or oversized input
//! becomes a [`WireError`].
//!
//! Memory is bounded twice. A decoded value takes a ~40-byte slot whatever its
//! size on the wire (a nil is one byte; a map entry is two, duplicate keys
//! included), so a frame whose decoding would allocate more than
//! [`max_decoded`] is refused before decoding; and the bytes all connections
//! hold in unfinished frames share one process-wide budget ([`buffer_budget`]).
//! The scan of an unfinished frame resumes where it stopped ([`ScanState`]).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmpv::Value;

/// Nesting deeper than this is refused (Kong's tables are a few levels deep).
const MAX_DEPTH: usize = 512;

/// Bytes decoding any frame may take, whatever its size.
const FREE_DECODED: u64 = 10 << 20;
/// Beyond those, this many bytes per byte of frame.
const DECODED_PER_BYTE: u64 = 5;

/// Most bytes decoding a frame of `len` bytes may take: 10 MiB plus 5 times
/// its size. A body (one string) takes little more than its own bytes.
pub fn max_decoded(len: usize) -> u64 {
    FREE_DECODED + len as u64 * DECODED_PER_BYTE
}

/// What decoding one value costs on top of its payload: its slot in the
/// array or map that holds it (a map entry is two slots, duplicate keys
/// included: they are all decoded before anything could merge them), twice
/// over because a container's storage may be twice its elements while it
/// grows (rmpv preallocates at most 64 KiB and then doubles).
const SLOT_BYTES: u64 = 2 * std::mem::size_of::<Value>() as u64;

/// The heap block malloc hands out for a string, binary or ext payload of
/// `len` bytes (an empty one allocates nothing): glibc rounds a request plus
/// its 8-byte header up to 16 bytes, 32 at least. An 8-byte key costs 32
/// bytes of heap besides its slot, 4 times its size on the wire.
fn payload_bytes(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        ((len as u64).saturating_add(8 + 15) & !15).max(32)
    }
}

/// Bytes held in unfinished frames by every decoder of the process.
static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// How many bytes all connections together may hold in unfinished frames,
/// for a per-frame limit of `max_frame`.
pub fn buffer_budget(max_frame: usize) -> usize {
    max_frame.saturating_mul(4).max(256 << 20)
}

#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The frame declares or reaches more bytes than the limit.
    TooLarge { limit: usize },
    /// Bytes that are not MessagePack (a reserved marker, too deep, ...).
    Malformed(String),
    /// A whole frame of `len` bytes whose decoding would take `decoded`
    /// bytes, more than [`max_decoded`] allows (many tiny values: a nil is one
    /// byte on the wire, a map entry with short key and value a few); it can
    /// be skipped.
    TooManyValues { decoded: u64, len: usize },
    /// The connections together hold more unfinished bytes than the budget.
    OverBudget { budget: usize },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { limit } => {
                write!(f, "message too large: frames are limited to {limit} bytes")
            }
            WireError::Malformed(why) => write!(f, "malformed MessagePack frame: {why}"),
            WireError::TooManyValues { decoded, len } => write!(
                f,
                "message refused: its {len} bytes would take about {} MB to decode \
                 (limit: {} MB for a message of this size; many small values)",
                decoded >> 20,
                max_decoded(*len) >> 20
            ),
            WireError::OverBudget { budget } => write!(
                f,
                "server busy: connections hold more than {budget} bytes of unfinished messages"
            ),
        }
    }
}

/// Accumulates socket bytes and yields whole decoded frames.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte in `buf`.
    pos: usize,
    max_frame: usize,
    /// What this decoder counts in [`BUFFERED`].
    accounted: usize,
    /// Set when an `extend` took the process over its budget.
    over_budget: bool,
    /// How far the unfinished frame at `pos` has been scanned (a `Cell`:
    /// peeking at a frame does not consume it, yet remembers the scan).
    scanned: Cell<ScanState>,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::with_capacity(4096),
            pos: 0,
            max_frame,
            accounted: 0,
            over_budget: false,
            scanned: Cell::new(ScanState::START),
        }
    }

    /// Appends bytes read from the socket. When the process holds more
    /// unfinished bytes than its budget, the next `next_frame` fails with
    /// [`WireError::OverBudget`] (the bytes are kept, so the caller decides).
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        let total = self.account();
        // A connection's first unfinished frame always fits: the budget is
        // several frames, so one peer cannot lock everybody out.
        if total > buffer_budget(self.max_frame) && self.buf.len() - self.pos > 64 * 1024 {
            self.over_budget = true;
        }
    }

    /// Brings [`BUFFERED`] up to date with this decoder; the new total.
    fn account(&mut self) -> usize {
        let now = self.buf.len() - self.pos;
        let total = if now >= self.accounted {
            BUFFERED.fetch_add(now - self.accounted, Ordering::Relaxed) + (now - self.accounted)
        } else {
            BUFFERED.fetch_sub(self.accounted - now, Ordering::Relaxed) - (self.accounted - now)
        };
        self.accounted = now;
        total
    }

    /// True when no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Drops everything buffered. After a malformed frame there is no way to
    /// find the next frame boundary, so the bytes received so far are given up.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.over_budget = false;
        self.scanned.set(ScanState::START);
        self.account();
    }

    /// The msgid of the request at the head of the buffer, if its first bytes
    /// already show it; used to address an error reply for a frame that could
    /// not be decoded.
    pub fn peek_msgid(&self) -> Option<u64> {
        peek_msgid(&self.buf[self.pos..])
    }

    /// Decodes the next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Value>, WireError> {
        let Some((value, len)) = self.peek_frame()? else {
            return Ok(None);
        };
        self.pos += len;
        self.scanned.set(ScanState::START);
        self.account();
        Ok(Some(value))
    }

    /// Decodes the next whole frame without consuming it; with its length,
    /// for [`consume`](Self::consume).
    pub fn peek_frame(&self) -> Result<Option<(Value, usize)>, WireError> {
        let pending = &self.buf[self.pos..];
        let mut scanned = self.scanned.get();
        let found = scan_from(pending, self.max_frame, &mut scanned);
        self.scanned.set(scanned);
        let Some((len, decoded)) = found? else {
            if self.over_budget {
                return Err(WireError::OverBudget {
                    budget: buffer_budget(self.max_frame),
                });
            }
            return Ok(None);
        };
        if decoded > max_decoded(len) {
            return Err(WireError::TooManyValues { decoded, len });
        }
        let mut frame = &pending[..len];
        let value = rmpv::decode::read_value_with_max_depth(&mut frame, MAX_DEPTH)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(Some((value, len)))
    }

    /// Drops `len` bytes of a frame returned by `peek_frame`.
    pub fn consume(&mut self, len: usize) {
        self.pos = (self.pos + len).min(self.buf.len());
        self.scanned.set(ScanState::START);
        self.account();
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.accounted, Ordering::Relaxed);
    }
}

/// Length of the first complete msgpack object in `buf`, `None` if `buf`
/// holds only a prefix of one.
pub fn frame_len(buf: &[u8], max_frame: usize) -> Result<Option<usize>, WireError> {
    Ok(scan(buf, max_frame)?.map(|(len, _)| len))
}

/// Length of the first complete msgpack object in `buf` and what decoding it
/// would allocate (bytes, see [`max_decoded`]), `None` if `buf` holds only a
/// prefix of one.
pub fn scan(buf: &[u8], max_frame: usize) -> Result<Option<(usize, u64)>, WireError> {
    let mut from_start = ScanState::START;
    scan_from(buf, max_frame, &mut from_start)
}

/// Where a scan of an unfinished frame stopped: at the start of the first
/// object it could not read whole. Scanning again from here once more bytes
/// have come makes the cost of a frame linear in its bytes, however thinly
/// the peer slices it (re-scanning from the frame's start on every read was
/// quadratic: 4 s of CPU for one 16 MB message of short strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanState {
    /// Offset of the next object's marker, from the frame's start.
    pos: usize,
    /// Decoded bytes counted before that object.
    decoded: u64,
    /// Objects still to be read, that one included.
    pending: u64,
}

impl ScanState {
    /// Nothing scanned yet: one object to read at offset 0.
    pub const START: ScanState = ScanState {
        pos: 0,
        decoded: 0,
        pending: 1,
    };
}

/// [`scan`] resumed from `state`, which must come from an earlier scan of a
/// prefix of `buf` (or be [`ScanState::START`]). When `buf` holds only a
/// prefix of the frame, `state` is left where this scan stopped.
pub fn scan_from(
    buf: &[u8],
    max_frame: usize,
    state: &mut ScanState,
) -> Result<Option<(usize, u64)>, WireError> {
    let too_large = WireError::TooLarge { limit: max_frame };
    let ScanState {
        mut pos,
        mut decoded,
        mut pending,
    } = *state;
    while pending > 0 {
        // An object is re-read from its marker when it is not all there yet.
        let resume = ScanState {
            pos,
            decoded,
            pending,
        };
        pending -= 1;
        decoded = decoded.saturating_add(SLOT_BYTES);
        let Some(&marker) = buf.get(pos) else {
            *state = resume;
            return if buf.len() > max_frame {
                Err(too_large)
            } else {
                Ok(None)
            };
        };
        pos += 1;
        // (bytes of a length field, bytes of fixed payload after it)
        let (len_bytes, fixed): (usize, usize) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => {
                pending += 2 * u64::from(marker & 0x0f);
                (0, 0)
            }
            0x90..=0x9f => {
                pending += u64::from(marker & 0x0f);
                (0, 0)
            }
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc1 => return Err(WireError::Malformed("reserved marker 0xc1".into())),
            0xc4 | 0xd9 => (1, 0),
            0xc5 | 0xda => (2, 0),
            0xc6 | 0xdb => (4, 0),
            // ext: length, then one type byte, then the data
            0xc7 => (1, 1),
            0xc8 => (2, 1),
            0xc9 => (4, 1),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc | 0xde => (2, 0),
            0xdd | 0xdf => (4, 0),
        };
        let mut skip = fixed;
        if len_bytes > 0 {
            let Some(field) = buf.get(pos..pos + len_bytes) else {
                *state = resume;
                return Ok(None);
            };
            pos += len_bytes;
            let n = field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            match marker {
                0xdc | 0xdd => pending += n,
                0xde | 0xdf => pending += 2 * n,
                _ => {
                    skip +=
                        usize::try_from(n).map_err(|_| WireError::TooLarge { limit: max_frame })?
                }
            }
        }
        // str, bin and ext own their payload (fixed-size scalars sit in the slot).
        if matches!(marker, 0xa0..=0xbf | 0xc4..=0xc9 | 0xd4..=0xd8 | 0xd9..=0xdb) {
            let payload = skip - usize::from(matches!(marker, 0xc7..=0xc9 | 0xd4..=0xd8));
            decoded = decoded.saturating_add(payload_bytes(payload));
        }
        // Every pending object takes at least one byte, so a count that cannot
        // fit in the limit is refused before anything is allocated for it.
        let needed = (pos as u64)
            .saturating_add(skip as u64)
            .saturating_add(pending);
        if needed > max_frame as u64 {
            return Err(too_large);
        }
        pos += skip;
        if pos > buf.len() {
            *state = resume;
            return Ok(None);
        }
    }
    Ok(Some((pos, decoded)))
}

/// Reads `[0, msgid, ...` off the head of a request without decoding it.
fn peek_msgid(buf: &[u8]) -> Option<u64> {
    let rest = match buf {
        [0x94, 0x00, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        [b @ 0x00..=0x7f, ..] => Some(u64::from(*b)),
        [0xcc, b, ..] => Some(u64::from(*b)),
        [0xcd, a, b, ..] => Some(u64::from(u16::from_be_bytes([*a, *b]))),
        [0xce, a, b, c, d, ..] => Some(u64::from(u32::from_be_bytes([*a, *b, *c, *d]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::MAX_FRAME as DEFAULT_MAX_FRAME;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode into Vec");
        out
    }

    fn sample() -> Value {
        Value::Array(vec![
            Value::from(0),
            Value::from(2),
            Value::from("plugin.HandleEvent"),
            Value::Array(vec![Value::Map(vec![
                (Value::from("InstanceId"), Value::from(0)),
                (Value::from("EventName"), Value::from("access")),
                (Value::from("Blob"), Value::Binary(vec![7; 300])),
                (Value::from("F"), Value::F64(1.5)),
            ])]),
        ])
    }

    #[test]
    fn decodes_protocol_example_bytes() {
        // docs/protocol.md §4.3: HandleEvent as Kong encodes it.
        let mut bytes = vec![0x94, 0x00, 0x02, 0xb2];
        bytes.extend_from_slice(b"plugin.HandleEvent");
        bytes.extend_from_slice(&[0x91, 0x82, 0xaa]);
        bytes.extend_from_slice(b"InstanceId");
        bytes.extend_from_slice(&[0x00, 0xa9]);
        bytes.extend_from_slice(b"EventName");
        bytes.push(0xa6);
        bytes.extend_from_slice(b"access");
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        let v = dec.next_frame().expect("valid").expect("complete");
        assert_eq!(v[2].as_str(), Some("plugin.HandleEvent"));
        assert!(dec.is_empty());
    }

    #[test]
    fn any_chunking_gives_the_same_frames() {
        let mut stream = encode(&sample());
        stream.extend(encode(&Value::from("second")));
        for chunk in [1usize, 2, 3, 7, 64, 1000] {
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                dec.extend(piece);
                while let Some(v) = dec.next_frame().expect("valid") {
                    frames.push(v);
                }
            }
            assert_eq!(
                frames,
                vec![sample(), Value::from("second")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn str16_short_string_and_invalid_utf8_are_accepted() {
        // docs/protocol.md §3.2: Kong sends str16 for 32+ bytes and raw non-UTF-8 bytes.
        let mut bytes = vec![0xda, 0x00, 0x03];
        bytes.extend_from_slice(&[b'a', 0xff, b'b']);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        let v = dec.next_frame().expect("valid").expect("complete");
        match v {
            Value::String(s) => assert_eq!(s.as_bytes(), &[b'a', 0xff, b'b']),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reserved_marker_is_malformed() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&[0x94, 0x00, 0x05, 0xc1]);
        assert!(matches!(dec.next_frame(), Err(WireError::Malformed(_))));
        assert_eq!(dec.peek_msgid(), Some(5));
    }

    #[test]
    fn declared_sizes_over_the_limit_are_refused_early() {
        // A str32 announcing 4 GiB, and an array32 announcing 4G elements.
        for bytes in [
            vec![0xdb, 0xff, 0xff, 0xff, 0xff],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        ] {
            let mut dec = FrameDecoder::new(1024);
            dec.extend(&bytes);
            assert_eq!(dec.next_frame(), Err(WireError::TooLarge { limit: 1024 }));
        }
    }

    #[test]
    fn a_frame_of_a_million_nils_is_refused_and_skippable_a_big_body_is_not() {
        let bytes = encode(&Value::Array(vec![
            Value::from(0),
            Value::from(8),
            Value::from("plugin.GetStatus"),
            Value::Array(vec![Value::Nil; 1 << 20]),
        ]));
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        dec.extend(&encode(&Value::from("next")));
        let Err(WireError::TooManyValues { decoded, len }) = dec.peek_frame() else {
            panic!("not refused");
        };
        assert!(decoded > max_decoded(len) && len == bytes.len());
        assert_eq!(dec.peek_msgid(), Some(8));
        dec.consume(len);
        assert_eq!(dec.next_frame(), Ok(Some(Value::from("next"))));

        let body = Value::Binary(vec![1; 10 << 20]);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&encode(&body));
        assert_eq!(dec.next_frame(), Ok(Some(body)));
    }

    #[test]
    fn a_map_of_duplicate_keys_counts_every_entry() {
        // 18 bytes on the wire per entry; 1M of them decoded took 292 MB.
        let entries = 1 << 20;
        let mut bytes = vec![0xdf];
        bytes.extend_from_slice(&(entries as u32).to_be_bytes());
        for _ in 0..entries {
            bytes.extend_from_slice(b"\xa8dupkey00\xa8value000");
        }
        let Some((len, decoded)) = scan(&bytes, DEFAULT_MAX_FRAME).expect("valid") else {
            panic!("incomplete");
        };
        assert_eq!(len, bytes.len());
        assert!(decoded > max_decoded(len), "{decoded} within the bound");
    }

    #[test]
    fn too_deep_nesting_is_malformed_not_a_crash() {
        let mut bytes = vec![0x91; 100_000];
        bytes.push(0xc0);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        assert!(matches!(dec.next_frame(), Err(WireError::Malformed(_))));
    }

    #[test]
    fn every_prefix_is_incomplete_never_an_error() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(
                scan(&bytes[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut {cut}"
            );
        }
        assert_eq!(
            scan(&bytes, DEFAULT_MAX_FRAME).map(|found| found.map(|(len, _)| len)),
            Ok(Some(bytes.len()))
        );
    }
}
