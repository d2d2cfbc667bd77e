//! MessagePack-RPC message shapes: parsing Kong's requests, writing replies.
//!
//! Requests are `[0, msgid, method, params]`, replies `[1, msgid, error,
//! result]` with a *string* error (Kong lower-cases it, docs/protocol.md §3.1), and
//! notifications `[2, label, args]`. This module knows the `plugin.*` method
//! names and the tolerant readers for Kong's encoding quirks (§3.2); it holds
//! no state and touches no Python.

use rmpv::Value;

/// The `plugin.*` methods (docs/protocol.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    StartInstance,
    CloseInstance,
    HandleEvent,
    /// Every `Step*` variant means the same; only `StepError` carries an error.
    Step {
        error: bool,
    },
    GetStatus,
    GetPluginInfo,
    InstanceStatus,
    SetPluginDir,
    /// Ours, never sent by Kong: the core of the worker-process model ends a
    /// worker's event that Kong abandoned (executor/process/mod.rs).
    AbandonEvent,
}

impl Method {
    /// Resolves a wire method name, or the error text to send back.
    pub fn parse(name: &str) -> Result<Method, String> {
        let Some(("plugin", command)) = name.split_once('.') else {
            let ns = name.split_once('.').map_or(name, |(ns, _)| ns);
            return Err(format!("RPC for {ns} is not supported"));
        };
        Ok(match command {
            "StartInstance" => Method::StartInstance,
            "CloseInstance" => Method::CloseInstance,
            "HandleEvent" => Method::HandleEvent,
            "Step" | "StepMultiMap" | "StepCredential" | "StepConsumer" | "StepRoute"
            | "StepService" | "StepMemoryStats" | "StepPlugin" => Method::Step { error: false },
            "StepError" => Method::Step { error: true },
            "GetStatus" => Method::GetStatus,
            "GetPluginInfo" => Method::GetPluginInfo,
            "InstanceStatus" => Method::InstanceStatus,
            "SetPluginDir" => Method::SetPluginDir,
            "AbandonEvent" => Method::AbandonEvent,
            _ => return Err(format!("method {name} not implemented")),
        })
    }
}

/// One decoded request.
#[derive(Debug)]
pub struct Request {
    pub msgid: u64,
    pub method: String,
    pub params: Vec<Value>,
}

/// Checks the request envelope; on failure returns the msgid to answer (as
/// received, so that the peer can match the error to its request; nil when
/// there is none) and the error text.
pub fn parse_request(frame: Value) -> Result<Request, (Value, String)> {
    let Value::Array(items) = frame else {
        return Err((
            Value::Nil,
            "malformed request: expected [0, msgid, method, params]".into(),
        ));
    };
    let raw_msgid = items.get(1).cloned().unwrap_or(Value::Nil);
    let mut items = items.into_iter();
    let (Some(kind), Some(_), Some(method), Some(params), None) = (
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
    ) else {
        return Err((
            raw_msgid,
            "malformed request: expected [0, msgid, method, params]".into(),
        ));
    };
    if as_u64(&kind) != Some(0) {
        return Err((
            raw_msgid,
            "malformed request: message type must be 0 (request)".into(),
        ));
    }
    let Some(msgid) = as_u64(&raw_msgid) else {
        return Err((
            raw_msgid,
            "malformed request: msgid must be an unsigned integer".into(),
        ));
    };
    let msgid_value = || Value::from(msgid);
    let Value::String(method) = method else {
        return Err((
            msgid_value(),
            "malformed request: method must be a string".into(),
        ));
    };
    let Some(method) = method.into_str() else {
        return Err((
            msgid_value(),
            "malformed request: method name is not UTF-8".into(),
        ));
    };
    let params = match params {
        Value::Array(params) => params,
        Value::Nil => Vec::new(),
        other => vec![other],
    };
    Ok(Request {
        msgid,
        method,
        params,
    })
}

/// The argument of a `plugin.Step*`: `{EventId, Data}`. Read in one place
/// for the I/O task (`service.rs`), a handler reading its lent connection
/// (`events/lent.rs`) and the looped model.
pub struct StepArgs {
    pub event_id: u64,
    /// `None` when Kong sent no `Data` (the PDK function returned nil).
    pub data: Option<Value>,
}

impl StepArgs {
    pub fn parse(arg: Option<&Value>) -> Result<StepArgs, &'static str> {
        let entries = arg.and_then(as_map).ok_or("Step expects {EventId, Data}")?;
        let event_id = field(entries, "EventId")
            .and_then(as_u64)
            .ok_or("Step expects an integer EventId")?;
        Ok(StepArgs {
            event_id,
            data: field(entries, "Data").cloned(),
        })
    }
}

/// Appends `[1, msgid, nil, ` — the result is to be written after it.
pub fn write_ok_prefix(out: &mut Vec<u8>, msgid: u64) {
    write_header(out, msgid);
    out.push(0xc0);
}

/// Appends `[1, msgid, nil, result]`.
pub fn write_ok(out: &mut Vec<u8>, msgid: u64, result: &Value) {
    write_header(out, msgid);
    out.push(0xc0);
    write_value(out, result);
}

/// Appends `[1, msgid, error, nil]`.
pub fn write_error(out: &mut Vec<u8>, msgid: u64, error: &str) {
    write_header(out, msgid);
    write_str(out, error);
    out.push(0xc0);
}

/// Appends `[1, msgid, error, nil]` for a request whose msgid is not a
/// plain unsigned integer: the msgid goes back as it came.
pub fn write_error_raw(out: &mut Vec<u8>, msgid: &Value, error: &str) {
    let _ = rmp::encode::write_array_len(out, 4);
    let _ = rmp::encode::write_uint(out, 1);
    write_value(out, msgid);
    write_str(out, error);
    out.push(0xc0);
}

/// Appends the `[2, "serverPid", pid]` notification (docs/protocol.md §2).
pub fn write_server_pid(out: &mut Vec<u8>, pid: u32) {
    let _ = rmp::encode::write_array_len(out, 3);
    let _ = rmp::encode::write_uint(out, 2);
    write_str(out, "serverPid");
    let _ = rmp::encode::write_uint(out, u64::from(pid));
}

fn write_header(out: &mut Vec<u8>, msgid: u64) {
    // Writing into a Vec cannot fail; the Results only exist for io::Write.
    let _ = rmp::encode::write_array_len(out, 4);
    let _ = rmp::encode::write_uint(out, 1);
    let _ = rmp::encode::write_uint(out, msgid);
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    let _ = rmpv::encode::write_value(out, v);
}

/// An unsigned integer, also from an integral float (Kong's numbers are
/// doubles, docs/protocol.md §3.2).
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => i.as_u64(),
        Value::F64(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(64) => Some(*f as u64),
        Value::F32(f) if f.fract() == 0.0 && *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

/// Entries of a map; Lua sends an empty table as `[]` (docs/protocol.md §3.2).
pub fn as_map(v: &Value) -> Option<&[(Value, Value)]> {
    match v {
        Value::Map(entries) => Some(entries),
        Value::Array(items) if items.is_empty() => Some(&[]),
        _ => None,
    }
}

/// Looks a string key up in a map value.
pub fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Shorthand for building reply maps.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!(
            Method::parse("plugin.StartInstance"),
            Ok(Method::StartInstance)
        );
        assert_eq!(
            Method::parse("plugin.StepMultiMap"),
            Ok(Method::Step { error: false })
        );
        assert_eq!(
            Method::parse("plugin.StepError"),
            Ok(Method::Step { error: true })
        );
        assert_eq!(
            Method::parse("other.Thing"),
            Err("RPC for other is not supported".to_string())
        );
        assert_eq!(
            Method::parse("plugin.Nope"),
            Err("method plugin.Nope not implemented".to_string())
        );
        assert_eq!(
            Method::parse("bare"),
            Err("RPC for bare is not supported".to_string())
        );
    }

    #[test]
    fn request_envelope() {
        let ok = Value::Array(vec![
            Value::from(0),
            Value::from(9),
            Value::from("plugin.GetStatus"),
            Value::Array(vec![]),
        ]);
        let req = parse_request(ok).expect("valid");
        assert_eq!((req.msgid, req.method.as_str()), (9, "plugin.GetStatus"));

        let short = Value::Array(vec![Value::from(0), Value::from(4)]);
        assert_eq!(
            parse_request(short).map(|_| ()).expect_err("invalid").0,
            Value::from(4)
        );
        assert_eq!(
            parse_request(Value::from("x"))
                .map(|_| ())
                .expect_err("invalid")
                .0,
            Value::Nil
        );
        for odd in [
            Value::from("7"),
            Value::from(-5),
            Value::F64(3.5),
            Value::Nil,
        ] {
            let req = Value::Array(vec![
                Value::from(0),
                odd.clone(),
                Value::from("plugin.GetStatus"),
                Value::Array(vec![]),
            ]);
            let (msgid, why) = parse_request(req).expect_err("odd msgid");
            assert_eq!(msgid, odd);
            assert!(why.contains("msgid"), "{why}");
        }
    }

    #[test]
    fn reply_bytes_match_protocol_example() {
        // docs/protocol.md §3.1: error reply [1, 5, "no plugin instance #7", nil]
        let mut out = Vec::new();
        write_error(&mut out, 5, "no plugin instance #7");
        let mut want = vec![0x94, 0x01, 0x05, 0xb5];
        want.extend_from_slice(b"no plugin instance #7");
        want.push(0xc0);
        assert_eq!(out, want);

        let mut out = Vec::new();
        write_server_pid(&mut out, 4242);
        let mut want = vec![0x93, 0x02, 0xa9];
        want.extend_from_slice(b"serverPid");
        want.extend_from_slice(&[0xcd, 0x10, 0x92]);
        assert_eq!(out, want);
    }

    #[test]
    fn tolerant_readers() {
        assert_eq!(as_u64(&Value::F64(3.0)), Some(3));
        assert_eq!(as_u64(&Value::F64(3.5)), None);
        assert_eq!(as_map(&Value::Array(vec![])).map(<[_]>::len), Some(0));
        assert!(as_map(&Value::Array(vec![Value::Nil])).is_none());
    }
}
