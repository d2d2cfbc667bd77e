//! MessagePack framing on a Unix stream: find where one object ends, read
//! whole objects, and write values the way Kong's Lua encoder does
//! (strings as fixstr/str16/str32, never str8; integers in the smallest
//! unsigned form; Lua nil in a map means the key is absent).

use std::io;

use rmpv::ValueRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::scenario::{Answer, Arg};

/// Refuse messages larger than this (a broken length would otherwise make us
/// buffer forever).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Length in bytes of the first complete MessagePack object in `b`.
/// `Ok(None)` means more bytes are needed; `Err` means `b` is not MessagePack.
pub fn msg_len(b: &[u8]) -> Result<Option<usize>, String> {
    fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
        let s = b.get(at..at + n)?;
        Some(s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }
    let mut pos = 0usize;
    // Objects still to be read (arrays and maps add their children).
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let Some(&m) = b.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        // (bytes of length field, fixed payload size, children multiplier)
        let mut skip: u64 = 0;
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
            0x80..=0x8f => pending += 2 * u64::from(m & 0x0f),
            0x90..=0x9f => pending += u64::from(m & 0x0f),
            0xa0..=0xbf => skip = u64::from(m & 0x1f),
            0xc1 => return Err(format!("reserved marker 0xc1 at offset {}", pos - 1)),
            0xc4 | 0xd9 | 0xc5 | 0xda | 0xc6 | 0xdb | 0xc7 | 0xc8 | 0xc9 => {
                let n = match m {
                    0xc4 | 0xd9 | 0xc7 => 1,
                    0xc5 | 0xda | 0xc8 => 2,
                    _ => 4,
                };
                let Some(len) = be(b, pos, n) else {
                    return Ok(None);
                };
                pos += n;
                // ext types carry one type byte before the payload
                skip = len + u64::from(matches!(m, 0xc7..=0xc9));
            }
            0xca | 0xce | 0xd2 => skip = 4,
            0xcb | 0xcf | 0xd3 => skip = 8,
            0xcc | 0xd0 => skip = 1,
            0xcd | 0xd1 => skip = 2,
            0xd4 => skip = 2,
            0xd5 => skip = 3,
            0xd6 => skip = 5,
            0xd7 => skip = 9,
            0xd8 => skip = 17,
            0xdc..=0xdf => {
                let n = if m == 0xdc || m == 0xde { 2 } else { 4 };
                let Some(len) = be(b, pos, n) else {
                    return Ok(None);
                };
                pos += n;
                pending += if m >= 0xde { 2 * len } else { len };
            }
        }
        let end = pos as u64 + skip;
        if end > MAX_MESSAGE as u64 || pending > MAX_MESSAGE as u64 {
            return Err("message larger than the 64 MiB limit".into());
        }
        pos = end as usize;
        if pos > b.len() {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

/// Decode exactly the object that `msg_len` delimited.
pub fn decode(b: &[u8]) -> Result<ValueRef<'_>, String> {
    let mut rd = b;
    let v = rmpv::decode::read_value_ref(&mut rd).map_err(|e| format!("bad msgpack: {e}"))?;
    if !rd.is_empty() {
        return Err("msgpack object shorter than its framing".into());
    }
    Ok(v)
}

/// A Unix stream with a read buffer of whole MessagePack objects.
pub struct Conn {
    pub stream: UnixStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    pub async fn connect(path: &std::path::Path) -> io::Result<Self> {
        Ok(Conn::new(UnixStream::connect(path).await?))
    }

    /// Ensure one complete object sits at the start of `buf` and return its
    /// length. `Ok(None)`: the peer closed cleanly between objects.
    pub async fn read_object(&mut self) -> io::Result<Option<usize>> {
        loop {
            if !self.buf.is_empty() {
                match msg_len(&self.buf) {
                    Ok(Some(n)) => return Ok(Some(n)),
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a message",
                    ))
                };
            }
        }
    }

    /// Drop the first `n` bytes of the buffer.
    pub fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

// ---- writers (into a Vec, which cannot fail) --------------------------------

/// A string as Kong's encoder writes it: fixstr, else str16, else str32.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

pub fn put_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        let _ = rmp::encode::write_uint(out, v as u64);
    } else {
        let _ = rmp::encode::write_sint(out, v);
    }
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    let _ = rmp::encode::write_f64(out, v);
}

pub fn put_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn put_array(out: &mut Vec<u8>, n: usize) {
    let _ = rmp::encode::write_array_len(out, n as u32);
}

pub fn put_map(out: &mut Vec<u8>, n: usize) {
    let _ = rmp::encode::write_map_len(out, n as u32);
}

pub fn put_arg(out: &mut Vec<u8>, a: &Arg) {
    match a {
        Arg::Str(s) => put_str(out, s),
        Arg::Int(i) => put_int(out, *i),
        Arg::Map(kv) => {
            put_map(out, kv.len());
            for (k, v) in kv.iter() {
                put_str(out, k);
                put_str(out, v);
            }
        }
    }
}

pub fn put_answer(out: &mut Vec<u8>, a: &Answer) {
    match a {
        Answer::Nil => put_nil(out),
        Answer::Str(s) => put_str(out, s),
        Answer::Int(i) => put_int(out, *i),
        Answer::MultiMap(kv) => {
            // §6.1: an empty multimap is an explicit empty map.
            put_map(out, kv.len());
            for (k, vs) in kv.iter() {
                put_str(out, k);
                put_array(out, vs.len());
                for v in vs.iter() {
                    put_str(out, v);
                }
            }
        }
    }
}

/// Start a request `[0, msgid, method, [` ... (caller writes one param).
pub fn begin_request(out: &mut Vec<u8>, msgid: u32, method: &str) {
    out.push(0x94);
    out.push(0x00);
    put_int(out, i64::from(msgid));
    put_str(out, method);
    out.push(0x91);
}

// ---- small ValueRef helpers ---------------------------------------------------

pub fn as_str<'a>(v: &'a ValueRef<'_>) -> Option<&'a str> {
    match v {
        ValueRef::String(s) => s.as_str(),
        _ => None,
    }
}

pub fn as_i64(v: &ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => i.as_i64(),
        _ => None,
    }
}

/// Look up a string key in a map value.
pub fn get<'a, 'b>(v: &'a ValueRef<'b>, key: &str) -> Option<&'a ValueRef<'b>> {
    match v {
        ValueRef::Map(kv) => kv
            .iter()
            .find(|(k, _)| as_str(k) == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = rmpv::encode::write_value(&mut out, v);
        out
    }

    #[test]
    fn msg_len_matches_encoder_and_detects_truncation() {
        use rmpv::Value;
        let vals = vec![
            Value::Nil,
            Value::from(5),
            Value::from(-300),
            Value::from(1u64 << 40),
            Value::from(1.5),
            Value::from("x".repeat(40)),
            Value::Binary(vec![1; 300]),
            Value::Array(vec![Value::from(1); 20]),
            Value::Map(vec![(Value::from("a"), Value::Array(vec![]))]),
            Value::Ext(3, vec![1, 2, 3]),
            Value::Array(vec![
                Value::from(1),
                Value::from(2),
                Value::Nil,
                Value::Map(vec![(Value::from("Data"), Value::from("ret"))]),
            ]),
        ];
        for v in vals {
            let b = enc(&v);
            assert_eq!(msg_len(&b), Ok(Some(b.len())), "{v:?}");
            for cut in 0..b.len() {
                assert_eq!(msg_len(&b[..cut]), Ok(None), "{v:?} cut {cut}");
            }
            let mut two = b.clone();
            two.extend_from_slice(&b);
            assert_eq!(msg_len(&two), Ok(Some(b.len())));
        }
        assert!(msg_len(&[0xc1]).is_err());
    }

    #[test]
    fn strings_like_kong() {
        let mut out = Vec::new();
        put_str(&mut out, &"a".repeat(124));
        assert_eq!(&out[..3], &[0xda, 0x00, 0x7c]);
    }
}
