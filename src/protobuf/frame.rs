//! ProtoBuf:1 framing: a 4-byte length in the machine's byte order (Kong
//! packs it with lua_pack's `I`), then that many bytes.
//!
//! Frames are read through a buffer, so that a frame usually costs one
//! `read`, and a read that times out keeps what it got: the caller may wait
//! in short ticks (to notice shutdown) without losing bytes. Frames are
//! written by the caller in one `write` with their length (two writes cost
//! Kong an extra wake-up per frame: docs/protobuf.md).

use std::io::{self, Read};

/// Appends one frame (length and payload) to `out`.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection.
    Closed,
    /// A frame longer than the bound (`--max-message-size`): the connection
    /// cannot be resynchronised without reading it, so it is closed.
    TooLarge(usize),
    /// The caller stopped waiting (shutdown or a deadline).
    GaveUp,
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "the peer closed the connection"),
            FrameError::TooLarge(n) => write!(f, "a frame of {n} bytes is over the size bound"),
            FrameError::GaveUp => write!(f, "stopped waiting for a frame"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads frames off a byte stream.
///
/// `buf[start..end]` holds bytes read but not taken yet; the buffer is
/// zeroed only when it grows, never per read.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            max,
        }
    }

    /// Whether part of a frame has arrived.
    pub fn has_partial(&self) -> bool {
        self.end > self.start
    }

    /// The next frame's payload, read from `src` as needed. When a read
    /// times out, `keep_waiting` decides whether to read on.
    pub fn next_frame(
        &mut self,
        mut src: impl Read,
        keep_waiting: &mut dyn FnMut(&Self) -> bool,
    ) -> Result<Vec<u8>, FrameError> {
        loop {
            let wanted = match self.take()? {
                Taken::Frame(frame) => return Ok(frame),
                Taken::Need(n) => n,
            };
            self.make_room(wanted);
            match src.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if !keep_waiting(self) {
                        return Err(FrameError::GaveUp);
                    }
                }
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    /// Room after `end` for a frame of `wanted` bytes from `start` (and at
    /// least some room to read into).
    fn make_room(&mut self, wanted: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.start + wanted > self.buf.len() || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = (self.start + wanted).max(self.end + 1);
        if needed > self.buf.len() {
            self.buf.resize(needed.max(READ_CHUNK), 0);
        }
    }

    /// A whole buffered frame, or how many bytes (from `start`) it needs.
    fn take(&mut self) -> Result<Taken, FrameError> {
        let avail = &self.buf[self.start..self.end];
        let Some(head) = avail.get(..4) else {
            return Ok(Taken::Need(4));
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(head);
        let len = u32::from_ne_bytes(len_bytes) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge(len));
        }
        let Some(payload) = avail.get(4..4 + len) else {
            return Ok(Taken::Need(4 + len));
        };
        let frame = payload.to_vec();
        self.start += 4 + len;
        Ok(Taken::Frame(frame))
    }
}

enum Taken {
    Frame(Vec<u8>),
    Need(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, then times out once, then ends.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        timed_out: bool,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.data.len() / 2 && !self.timed_out {
                self.timed_out = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_survive_short_reads_and_timeouts() {
        let mut data = Vec::new();
        push_frame(&mut data, b"kong.request.get_header").expect("frame");
        push_frame(&mut data, b"").expect("frame");
        push_frame(&mut data, &[7u8; 300]).expect("frame");
        let mut src = Dribble {
            data,
            pos: 0,
            step: 3,
            timed_out: false,
        };
        let mut reader = FrameReader::new(1024);
        let mut waits = 0;
        let mut wait = |_: &FrameReader| {
            waits += 1;
            true
        };
        assert_eq!(
            reader.next_frame(&mut src, &mut wait).expect("frame"),
            b"kong.request.get_header"
        );
        assert_eq!(reader.next_frame(&mut src, &mut wait).expect("frame"), b"");
        assert_eq!(
            reader.next_frame(&mut src, &mut wait).expect("frame"),
            vec![7u8; 300]
        );
        assert!(matches!(
            reader.next_frame(&mut src, &mut wait),
            Err(FrameError::Closed)
        ));
        assert_eq!(waits, 1);
    }

    #[test]
    fn frames_larger_than_a_read_and_across_reads() {
        let mut data = Vec::new();
        push_frame(&mut data, b"small").expect("frame");
        let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        push_frame(&mut data, &big).expect("frame");
        push_frame(&mut data, b"after").expect("frame");
        for step in [1, 7, 4096, 100_000] {
            let mut src = Dribble {
                data: data.clone(),
                pos: 0,
                step,
                timed_out: false,
            };
            let mut reader = FrameReader::new(1 << 20);
            let mut wait = |_: &FrameReader| true;
            assert_eq!(reader.next_frame(&mut src, &mut wait).expect("1"), b"small");
            assert_eq!(reader.next_frame(&mut src, &mut wait).expect("2"), big);
            assert_eq!(reader.next_frame(&mut src, &mut wait).expect("3"), b"after");
        }
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_before_it_is_read() {
        let mut data = Vec::new();
        push_frame(&mut data, &[0u8; 100]).expect("frame");
        let mut reader = FrameReader::new(99);
        let got = reader.next_frame(&data[..8], &mut |_| true);
        assert!(matches!(got, Err(FrameError::TooLarge(100))));
    }

    #[test]
    fn giving_up_keeps_the_partial_frame() {
        let mut data = Vec::new();
        push_frame(&mut data, b"abc").expect("frame");
        let mut reader = FrameReader::new(99);
        let mut first = Dribble {
            data: data.clone(),
            pos: 0,
            step: 3,
            timed_out: false,
        };
        // Times out with 3 of 7 bytes in (the half-way timeout of Dribble).
        first.data.truncate(6);
        let got = reader.next_frame(&mut first, &mut |r| {
            assert!(r.has_partial());
            false
        });
        assert!(matches!(got, Err(FrameError::GaveUp)));
        let rest = &data[reader.end..];
        assert_eq!(
            reader.next_frame(rest, &mut |_| true).expect("frame"),
            b"abc"
        );
    }
}
