//! Property tests of what reads socket bytes: the frame decoder (`wire`) and
//! the request parser (`rpc`). Whatever arrives, they must not panic, and the
//! decoder must never claim a frame longer than the bytes it holds; valid
//! MessagePack of any shape must come out whole and byte-for-byte the same.
//!
//! 2,000 cases per property by default, so `cargo test` stays short; a long
//! run: `PROPTEST_CASES=1000000 cargo test --release --test fuzz_wire`
//! (docs/fuzzing.md).

use _core::defaults::MAX_FRAME as DEFAULT_MAX_FRAME;
use _core::rpc::parse_request;
use _core::wire::{frame_len, scan, scan_from, FrameDecoder, ScanState};
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        ".{0,40}".prop_map(Value::from),
        vec(any::<u8>(), 0..64).prop_map(Value::Binary),
        (any::<i8>(), vec(any::<u8>(), 0..20)).prop_map(|(t, d)| Value::Ext(t, d)),
    ]
}

/// Any MessagePack value, nested at most 5 levels, a few dozen nodes.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
        ]
    })
}

/// `[0, msgid, method, params]` with any msgid and params, and a method that
/// is often a real one.
fn request() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just(Value::from("plugin.GetStatus")),
        Just(Value::from("plugin.StartInstance")),
        Just(Value::from("plugin.HandleEvent")),
        Just(Value::from("plugin.Step")),
        Just(Value::from("plugin.StepError")),
        leaf(),
    ];
    (leaf(), method, value()).prop_map(|(msgid, method, params)| {
        Value::Array(vec![Value::from(0), msgid, method, params])
    })
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encoding into a Vec cannot fail");
    out
}

/// Feeds `bytes` in the given chunks and takes frames as the server does
/// (a bad frame drops what is buffered); checks every frame's length against
/// the bytes the decoder holds. Returns the frames.
fn feed(bytes: &[u8], cuts: &[usize], max_frame: usize) -> Result<Vec<Value>, TestCaseError> {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut held = 0usize;
    let mut frames = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        let chunk = &bytes[start..end.max(start)];
        start = end.max(start);
        decoder.extend(chunk);
        held += chunk.len();
        loop {
            match decoder.peek_frame() {
                Ok(Some((frame, len))) => {
                    prop_assert!(len > 0 && len <= held, "frame of {len} bytes, {held} held");
                    decoder.consume(len);
                    held -= len;
                    // The parser takes anything the decoder gives.
                    let _ = parse_request(frame.clone());
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => {
                    decoder.reset();
                    held = 0;
                    break;
                }
            }
        }
    }
    Ok(frames)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_nor_overrun(
        bytes in vec(any::<u8>(), 0..1024),
        cuts in vec(any::<usize>(), 0..8),
        small in any::<bool>(),
    ) {
        let max_frame = if small { 64 } else { DEFAULT_MAX_FRAME };
        if let Ok(Some(len)) = frame_len(&bytes, max_frame) {
            prop_assert!(len <= bytes.len() && len <= max_frame);
        }
        feed(&bytes, &cuts, max_frame)?;
    }

    #[test]
    fn any_value_is_one_whole_frame_and_comes_back_unchanged(
        v in value(),
        cuts in vec(any::<usize>(), 0..8),
        cut in any::<usize>(),
    ) {
        let bytes = encode(&v);
        prop_assert_eq!(frame_len(&bytes, DEFAULT_MAX_FRAME), Ok(Some(bytes.len())));
        let prefix = cut % bytes.len();
        prop_assert_eq!(frame_len(&bytes[..prefix], DEFAULT_MAX_FRAME), Ok(None));
        // Two values back to back, in arbitrary chunks.
        let mut stream = bytes.clone();
        stream.extend_from_slice(&bytes);
        let frames = feed(&stream, &cuts, DEFAULT_MAX_FRAME)?;
        prop_assert_eq!(frames.len(), 2);
        for frame in &frames {
            prop_assert_eq!(&encode(frame), &bytes);
        }
    }

    /// The decoder keeps its scan position between reads (linear, not
    /// quadratic, in the bytes of a frame sent in pieces): resuming must
    /// give, at every piece, what scanning all the bytes so far from the
    /// start gives.
    #[test]
    fn scanning_in_pieces_equals_scanning_the_whole(
        v in value(),
        noise in vec(any::<u8>(), 0..256),
        garbage in any::<bool>(),
        cuts in vec(any::<usize>(), 1..12),
        small in any::<bool>(),
    ) {
        let bytes = if garbage { noise } else { encode(&v) };
        let max_frame = if small { 64 } else { DEFAULT_MAX_FRAME };
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let mut state = ScanState::START;
        for end in ends {
            let resumed = scan_from(&bytes[..end], max_frame, &mut state);
            let whole = scan(&bytes[..end], max_frame);
            prop_assert_eq!(&resumed, &whole, "prefix of {} bytes", end);
            if !matches!(whole, Ok(None)) {
                break;
            }
        }
    }

    #[test]
    fn request_shaped_values_never_panic_the_parser(req in request(), cuts in vec(any::<usize>(), 0..4)) {
        let bytes = encode(&req);
        let frames = feed(&bytes, &cuts, DEFAULT_MAX_FRAME)?;
        prop_assert_eq!(frames.len(), 1);
        let _ = parse_request(req);
    }
}
