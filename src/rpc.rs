//! MessagePack-RPC message shapes: parsing Kong's requests, writing replies.
//!
//! Requests are `[0, msgid, method, params]`, replies `[1, msgid, error,
//! result]` with a *string* error (Kong lower-cases it, docs/protocol.md §3.1), and
//! notifications `[2, label, args]`. This module knows the `plugin.*` method
//! names and the tolerant readers for Kong's encoding quirks (§3.2); it holds
//! no state and touches no Python.

use std::fmt;

use rmpv::Value;

/// A request's envelope was not `[0, msgid, method, params]`: answered with
/// the msgid as received (nil when there is none) and [`BadRequest::why`].
#[derive(Debug, PartialEq)]
pub struct BadRequest {
    pub msgid: Value,
    pub why: EnvelopeError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    Shape,
    Kind,
    Msgid,
    MethodNotString,
    MethodNotUtf8,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvelopeError::Shape => "malformed request: expected [0, msgid, method, params]",
            EnvelopeError::Kind => "malformed request: message type must be 0 (request)",
            EnvelopeError::Msgid => "malformed request: msgid must be an unsigned integer",
            EnvelopeError::MethodNotString => "malformed request: method must be a string",
            EnvelopeError::MethodNotUtf8 => "malformed request: method name is not UTF-8",
        })
    }
}

/// One decoded request: its msgid, and its call or why the call is wrong
/// (answered with that msgid).
#[derive(Debug)]
pub struct Request {
    pub msgid: u64,
    pub call: Result<Call, CallError>,
    /// A string second parameter, which Kong never sends: our own servers
    /// mark a request they pass on with it (`handover.rs`).
    pub tag: Option<String>,
}

/// Checks the request envelope and parses its call, moving the arguments
/// out of the decoded frame (nothing is copied).
pub fn parse_request(frame: Value) -> Result<Request, BadRequest> {
    let bad = |msgid: Value, why| Err(BadRequest { msgid, why });
    let Value::Array(items) = frame else {
        return bad(Value::Nil, EnvelopeError::Shape);
    };
    if items.len() != 4 {
        // The msgid as received, when there is one, so that the peer can
        // match the error to its request.
        let msgid = items.into_iter().nth(1).unwrap_or(Value::Nil);
        return bad(msgid, EnvelopeError::Shape);
    }
    let mut items = items.into_iter();
    let (Some(kind), Some(raw_msgid), Some(method), Some(params)) =
        (items.next(), items.next(), items.next(), items.next())
    else {
        return bad(Value::Nil, EnvelopeError::Shape);
    };
    if as_u64(&kind) != Some(0) {
        return bad(raw_msgid, EnvelopeError::Kind);
    }
    let Some(msgid) = as_u64(&raw_msgid) else {
        return bad(raw_msgid, EnvelopeError::Msgid);
    };
    let Value::String(method) = method else {
        return bad(Value::from(msgid), EnvelopeError::MethodNotString);
    };
    let Some(method) = method.into_str() else {
        return bad(Value::from(msgid), EnvelopeError::MethodNotUtf8);
    };
    let (first, tag) = match params {
        Value::Array(params) => {
            let mut params = params.into_iter();
            let first = params.next().unwrap_or(Value::Nil);
            let tag = match params.next() {
                Some(Value::String(tag)) => tag.into_str(),
                _ => None,
            };
            (first, tag)
        }
        other => (other, None),
    };
    Ok(Request {
        msgid,
        call: Call::parse(&method, first),
        tag,
    })
}

/// One `plugin.*` call with its arguments read (docs/protocol.md §4). Every
/// method reads only its first parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `{Name, Config}`: `name` is empty when missing; `config` is Kong's
    /// JSON text as sent (nil when missing).
    StartInstance {
        name: String,
        config: Value,
    },
    /// A bare id, or `{Id}`.
    CloseInstance {
        id: u64,
    },
    /// `{InstanceId, EventName}`: `phase` is the name as sent (empty when
    /// missing), checked against the plugin's phases by the service.
    HandleEvent {
        instance: u64,
        phase: String,
    },
    /// Every `Step*` method: `{EventId, Data}`; `data` is `None` when Kong
    /// sent no `Data` (the PDK function returned nil). Only `StepError`
    /// carries an error.
    Step {
        event: u64,
        data: Option<Value>,
        error: bool,
    },
    GetStatus,
    /// A plugin name; without one, the only plugin's.
    GetPluginInfo {
        name: Option<String>,
    },
    /// A bare id, or `{Id}`.
    InstanceStatus {
        id: u64,
    },
    /// The folder, as sent (its error names it as sent).
    SetPluginDir {
        dir: Value,
    },
    /// Ours, never sent by Kong: the core of the worker-process model ends a
    /// worker's event that Kong abandoned (models/processes/mod.rs).
    AbandonEvent {
        event: u64,
    },
}

/// Why a request's method or arguments are refused; the texts are what
/// Kong's log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not a `plugin.*` method: the namespace.
    Namespace(String),
    /// A `plugin.*` method we do not know: its full name.
    NotImplemented(String),
    StartInstanceArgs,
    /// CloseInstance or InstanceStatus without an id.
    InstanceId,
    HandleEventArgs,
    HandleEventInstanceId,
    StepArgs,
    StepEventId,
    AbandonEventArgs,
    AbandonEventId,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Namespace(ns) => write!(f, "RPC for {ns} is not supported"),
            CallError::NotImplemented(name) => write!(f, "method {name} not implemented"),
            CallError::StartInstanceArgs => f.write_str("StartInstance expects {Name, Config}"),
            CallError::InstanceId => f.write_str("expected an instance id"),
            CallError::HandleEventArgs => {
                f.write_str("HandleEvent expects {InstanceId, EventName}")
            }
            CallError::HandleEventInstanceId => {
                f.write_str("HandleEvent expects an integer InstanceId")
            }
            CallError::StepArgs => f.write_str("Step expects {EventId, Data}"),
            CallError::StepEventId => f.write_str("Step expects an integer EventId"),
            CallError::AbandonEventArgs => f.write_str("AbandonEvent expects {EventId}"),
            CallError::AbandonEventId => f.write_str("AbandonEvent expects an integer EventId"),
        }
    }
}

impl Call {
    /// Reads method `name`'s argument `arg`, moving what it keeps out of it.
    pub fn parse(name: &str, arg: Value) -> Result<Call, CallError> {
        let Some(("plugin", command)) = name.split_once('.') else {
            let ns = name.split_once('.').map_or(name, |(ns, _)| ns);
            return Err(CallError::Namespace(ns.to_string()));
        };
        Ok(match command {
            "StartInstance" => {
                let mut entries = into_map(arg).ok_or(CallError::StartInstanceArgs)?;
                let name = match take(&mut entries, "Name") {
                    Some(Value::String(name)) => name.into_str().unwrap_or_default(),
                    _ => String::new(),
                };
                let config = take(&mut entries, "Config").unwrap_or(Value::Nil);
                Call::StartInstance { name, config }
            }
            "CloseInstance" => Call::CloseInstance {
                id: instance_id(&arg)?,
            },
            "HandleEvent" => {
                let mut entries = into_map(arg).ok_or(CallError::HandleEventArgs)?;
                let instance = field(&entries, "InstanceId")
                    .and_then(as_u64)
                    .ok_or(CallError::HandleEventInstanceId)?;
                let phase = match take(&mut entries, "EventName") {
                    Some(Value::String(phase)) => phase.into_str().unwrap_or_default(),
                    _ => String::new(),
                };
                Call::HandleEvent { instance, phase }
            }
            "Step" | "StepMultiMap" | "StepCredential" | "StepConsumer" | "StepRoute"
            | "StepService" | "StepMemoryStats" | "StepPlugin" => step(arg, false)?,
            "StepError" => step(arg, true)?,
            "GetStatus" => Call::GetStatus,
            "GetPluginInfo" => Call::GetPluginInfo {
                name: match arg {
                    Value::String(name) => name.into_str(),
                    _ => None,
                },
            },
            "InstanceStatus" => Call::InstanceStatus {
                id: instance_id(&arg)?,
            },
            "SetPluginDir" => Call::SetPluginDir { dir: arg },
            "AbandonEvent" => {
                let entries = as_map(&arg).ok_or(CallError::AbandonEventArgs)?;
                let event = field(entries, "EventId")
                    .and_then(as_u64)
                    .ok_or(CallError::AbandonEventId)?;
                Call::AbandonEvent { event }
            }
            _ => return Err(CallError::NotImplemented(name.to_string())),
        })
    }

    /// The method's name, for logs and for passing the call on.
    pub fn method(&self) -> &'static str {
        match self {
            Call::StartInstance { .. } => "plugin.StartInstance",
            Call::CloseInstance { .. } => "plugin.CloseInstance",
            Call::HandleEvent { .. } => "plugin.HandleEvent",
            Call::Step { error: false, .. } => "plugin.Step",
            Call::Step { error: true, .. } => "plugin.StepError",
            Call::GetStatus => "plugin.GetStatus",
            Call::GetPluginInfo { .. } => "plugin.GetPluginInfo",
            Call::InstanceStatus { .. } => "plugin.InstanceStatus",
            Call::SetPluginDir { .. } => "plugin.SetPluginDir",
            Call::AbandonEvent { .. } => "plugin.AbandonEvent",
        }
    }

    /// The argument, as [`Call::parse`] reads it back.
    pub fn arg(&self) -> Value {
        match self {
            Call::StartInstance { name, config } => map(vec![
                ("Name", Value::from(name.as_str())),
                ("Config", config.clone()),
            ]),
            Call::CloseInstance { id } | Call::InstanceStatus { id } => Value::from(*id),
            Call::HandleEvent { instance, phase } => map(vec![
                ("InstanceId", Value::from(*instance)),
                ("EventName", Value::from(phase.as_str())),
            ]),
            Call::Step { event, data, .. } => {
                let mut entries = vec![("EventId", Value::from(*event))];
                if let Some(data) = data {
                    entries.push(("Data", data.clone()));
                }
                map(entries)
            }
            Call::GetStatus | Call::GetPluginInfo { name: None } => Value::Nil,
            Call::GetPluginInfo { name: Some(name) } => Value::from(name.as_str()),
            Call::SetPluginDir { dir } => dir.clone(),
            Call::AbandonEvent { event } => map(vec![("EventId", Value::from(*event))]),
        }
    }

    /// Appends the request `[0, msgid, method, [arg]]`, with `tag` as a
    /// second parameter when given (`handover.rs`).
    pub fn write_request(&self, out: &mut Vec<u8>, msgid: u64, tag: Option<&str>) {
        let _ = rmp::encode::write_array_len(out, 4);
        let _ = rmp::encode::write_uint(out, 0);
        let _ = rmp::encode::write_uint(out, msgid);
        write_str(out, self.method());
        let _ = rmp::encode::write_array_len(out, if tag.is_some() { 2 } else { 1 });
        write_value(out, &self.arg());
        if let Some(tag) = tag {
            write_str(out, tag);
        }
    }

    /// Whether serving it may block the calling thread for long (it runs
    /// the plugin's constructor): an async caller runs it off its threads.
    pub fn blocks(&self) -> bool {
        matches!(self, Call::StartInstance { .. })
    }
}

fn step(arg: Value, error: bool) -> Result<Call, CallError> {
    let mut entries = into_map(arg).ok_or(CallError::StepArgs)?;
    let event = field(&entries, "EventId")
        .and_then(as_u64)
        .ok_or(CallError::StepEventId)?;
    Ok(Call::Step {
        event,
        data: take(&mut entries, "Data"),
        error,
    })
}

/// CloseInstance and InstanceStatus take a bare id; accept `{Id}` too.
fn instance_id(arg: &Value) -> Result<u64, CallError> {
    as_u64(arg)
        .or_else(|| as_map(arg).and_then(|m| field(m, "Id")).and_then(as_u64))
        .ok_or(CallError::InstanceId)
}

/// The entries of a map, owned; Lua sends an empty table as `[]`.
fn into_map(v: Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Map(entries) => Some(entries),
        Value::Array(items) if items.is_empty() => Some(Vec::new()),
        _ => None,
    }
}

/// Moves the value of the first entry named `key` out of a map.
fn take(entries: &mut [(Value, Value)], key: &str) -> Option<Value> {
    entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| std::mem::replace(v, Value::Nil))
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

/// Appends the result `{"Data": "ret", "EventId": id}`: the event's
/// handler returned (docs/protocol.md §5.2.4). The one encoding of it.
pub fn write_ret(out: &mut Vec<u8>, event_id: u64) {
    let _ = rmp::encode::write_map_len(out, 2);
    write_str(out, "Data");
    write_str(out, "ret");
    write_str(out, "EventId");
    let _ = rmp::encode::write_uint(out, event_id);
}

/// Appends the result `{"Data": {"Method": m, "Args": args}, "EventId": id}`
/// around already encoded args: a PDK call (§5.2.2). The one encoding of it.
pub fn write_call_result(out: &mut Vec<u8>, event_id: u64, method: &str, args: &[u8]) {
    let _ = rmp::encode::write_map_len(out, 2);
    write_str(out, "Data");
    let _ = rmp::encode::write_map_len(out, 2);
    write_str(out, "Method");
    write_str(out, method);
    write_str(out, "Args");
    out.extend_from_slice(args);
    write_str(out, "EventId");
    let _ = rmp::encode::write_uint(out, event_id);
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

    fn request(method: &str, params: Value) -> Value {
        Value::Array(vec![
            Value::from(0),
            Value::from(9),
            Value::from(method),
            params,
        ])
    }

    fn call(method: &str, arg: Value) -> Result<Call, CallError> {
        Call::parse(method, arg)
    }

    fn entries(pairs: &[(&str, Value)]) -> Value {
        map(pairs.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    #[test]
    fn every_method_is_read_into_its_call() {
        let config = Value::from(r#"{"x": 1}"#);
        assert_eq!(
            call(
                "plugin.StartInstance",
                entries(&[("Name", Value::from("p")), ("Config", config.clone())])
            ),
            Ok(Call::StartInstance {
                name: "p".into(),
                config
            })
        );
        // Missing name and config: refused by the service, by name.
        assert_eq!(
            call("plugin.StartInstance", Value::Array(vec![])),
            Ok(Call::StartInstance {
                name: String::new(),
                config: Value::Nil
            })
        );
        for id in [
            Value::from(4),
            Value::F64(4.0),
            entries(&[("Id", Value::from(4))]),
        ] {
            assert_eq!(
                call("plugin.CloseInstance", id.clone()),
                Ok(Call::CloseInstance { id: 4 })
            );
            assert_eq!(
                call("plugin.InstanceStatus", id),
                Ok(Call::InstanceStatus { id: 4 })
            );
        }
        assert_eq!(
            call(
                "plugin.HandleEvent",
                entries(&[
                    ("InstanceId", Value::from(3)),
                    ("EventName", Value::from("access"))
                ])
            ),
            Ok(Call::HandleEvent {
                instance: 3,
                phase: "access".into()
            })
        );
        assert_eq!(
            call(
                "plugin.HandleEvent",
                entries(&[("InstanceId", Value::from(3))])
            ),
            Ok(Call::HandleEvent {
                instance: 3,
                phase: String::new()
            })
        );
        let step = entries(&[("EventId", Value::from(8)), ("Data", Value::from("v"))]);
        for method in [
            "plugin.Step",
            "plugin.StepMultiMap",
            "plugin.StepCredential",
            "plugin.StepConsumer",
            "plugin.StepRoute",
            "plugin.StepService",
            "plugin.StepMemoryStats",
            "plugin.StepPlugin",
        ] {
            assert_eq!(
                call(method, step.clone()),
                Ok(Call::Step {
                    event: 8,
                    data: Some(Value::from("v")),
                    error: false
                }),
                "{method}"
            );
        }
        assert_eq!(
            call("plugin.StepError", entries(&[("EventId", Value::from(8))])),
            Ok(Call::Step {
                event: 8,
                data: None,
                error: true
            })
        );
        assert_eq!(call("plugin.GetStatus", Value::Nil), Ok(Call::GetStatus));
        assert_eq!(
            call("plugin.GetPluginInfo", Value::from("p")),
            Ok(Call::GetPluginInfo {
                name: Some("p".into())
            })
        );
        assert_eq!(
            call("plugin.GetPluginInfo", Value::from(5)),
            Ok(Call::GetPluginInfo { name: None })
        );
        assert_eq!(
            call("plugin.SetPluginDir", Value::from("/tmp")),
            Ok(Call::SetPluginDir {
                dir: Value::from("/tmp")
            })
        );
        assert_eq!(
            call(
                "plugin.AbandonEvent",
                entries(&[("EventId", Value::from(2))])
            ),
            Ok(Call::AbandonEvent { event: 2 })
        );
    }

    #[test]
    fn every_malformed_shape_has_its_error_text() {
        let cases: Vec<(&str, Value, CallError, &str)> = vec![
            (
                "other.Thing",
                Value::Nil,
                CallError::Namespace("other".into()),
                "RPC for other is not supported",
            ),
            (
                "bare",
                Value::Nil,
                CallError::Namespace("bare".into()),
                "RPC for bare is not supported",
            ),
            (
                "plugin.Nope",
                Value::Nil,
                CallError::NotImplemented("plugin.Nope".into()),
                "method plugin.Nope not implemented",
            ),
            (
                "plugin.StartInstance",
                Value::from("x"),
                CallError::StartInstanceArgs,
                "StartInstance expects {Name, Config}",
            ),
            (
                "plugin.CloseInstance",
                Value::from("x"),
                CallError::InstanceId,
                "expected an instance id",
            ),
            (
                "plugin.InstanceStatus",
                Value::F64(1.5),
                CallError::InstanceId,
                "expected an instance id",
            ),
            (
                "plugin.HandleEvent",
                Value::Nil,
                CallError::HandleEventArgs,
                "HandleEvent expects {InstanceId, EventName}",
            ),
            (
                "plugin.HandleEvent",
                entries(&[("InstanceId", Value::from(-1))]),
                CallError::HandleEventInstanceId,
                "HandleEvent expects an integer InstanceId",
            ),
            (
                "plugin.Step",
                Value::Nil,
                CallError::StepArgs,
                "Step expects {EventId, Data}",
            ),
            (
                "plugin.StepError",
                entries(&[("EventId", Value::from("1"))]),
                CallError::StepEventId,
                "Step expects an integer EventId",
            ),
            (
                "plugin.AbandonEvent",
                Value::from(1),
                CallError::AbandonEventArgs,
                "AbandonEvent expects {EventId}",
            ),
            (
                "plugin.AbandonEvent",
                entries(&[]),
                CallError::AbandonEventId,
                "AbandonEvent expects an integer EventId",
            ),
        ];
        for (method, arg, error, text) in cases {
            assert_eq!(call(method, arg).as_ref(), Err(&error), "{method}");
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn request_envelope() {
        let req = parse_request(request("plugin.GetStatus", Value::Array(vec![]))).expect("valid");
        assert_eq!(
            (req.msgid, req.call, req.tag),
            (9, Ok(Call::GetStatus), None)
        );
        // A bare first parameter, a tag, and params left out.
        let req = parse_request(request(
            "plugin.CloseInstance",
            Value::Array(vec![Value::from(2), Value::from("kong_pdk:x")]),
        ))
        .expect("valid");
        assert_eq!(req.call, Ok(Call::CloseInstance { id: 2 }));
        assert_eq!(req.tag.as_deref(), Some("kong_pdk:x"));
        let req = parse_request(request("plugin.CloseInstance", Value::from(2))).expect("valid");
        assert_eq!(req.call, Ok(Call::CloseInstance { id: 2 }));
        // A known envelope with a wrong method is still a request (its
        // msgid is answered).
        let req = parse_request(request("plugin.Nope", Value::Nil)).expect("valid");
        assert!(req.call.is_err());

        let short = Value::Array(vec![Value::from(0), Value::from(4)]);
        assert_eq!(
            parse_request(short).map(|_| ()),
            Err(BadRequest {
                msgid: Value::from(4),
                why: EnvelopeError::Shape
            })
        );
        assert_eq!(
            parse_request(Value::from("x")).map(|_| ()),
            Err(BadRequest {
                msgid: Value::Nil,
                why: EnvelopeError::Shape
            })
        );
        let reply = Value::Array(vec![
            Value::from(1),
            Value::from(4),
            Value::from("plugin.GetStatus"),
            Value::Nil,
        ]);
        assert_eq!(
            parse_request(reply).map(|_| ()).expect_err("a reply").why,
            EnvelopeError::Kind
        );
        let no_name = Value::Array(vec![
            Value::from(0),
            Value::from(4),
            Value::from(7),
            Value::Nil,
        ]);
        assert_eq!(
            parse_request(no_name).map(|_| ()),
            Err(BadRequest {
                msgid: Value::from(4),
                why: EnvelopeError::MethodNotString
            })
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
            let bad = parse_request(req).map(|_| ()).expect_err("odd msgid");
            assert_eq!((bad.msgid, bad.why), (odd, EnvelopeError::Msgid));
            assert!(bad.why.to_string().contains("msgid"));
        }
    }

    #[test]
    fn a_call_written_as_a_request_reads_back_the_same() {
        let calls = [
            Call::StartInstance {
                name: "p".into(),
                config: Value::from("{}"),
            },
            Call::CloseInstance { id: 1 },
            Call::HandleEvent {
                instance: 2,
                phase: "log".into(),
            },
            Call::Step {
                event: 3,
                data: Some(Value::from(1)),
                error: false,
            },
            Call::Step {
                event: 3,
                data: None,
                error: true,
            },
            Call::GetStatus,
            Call::GetPluginInfo { name: None },
            Call::GetPluginInfo {
                name: Some("p".into()),
            },
            Call::InstanceStatus { id: 4 },
            Call::SetPluginDir {
                dir: Value::from("/x"),
            },
            Call::AbandonEvent { event: 5 },
        ];
        for call in calls {
            let mut out = Vec::new();
            call.write_request(&mut out, 11, Some("tag"));
            let frame = rmpv::decode::read_value(&mut &out[..]).expect("msgpack");
            let req = parse_request(frame).expect("a request");
            assert_eq!((req.msgid, req.tag.as_deref()), (11, Some("tag")));
            assert_eq!(req.call, Ok(call));
        }
    }

    #[test]
    fn ret_and_call_results_have_one_encoding() {
        let mut out = Vec::new();
        write_ret(&mut out, 7);
        assert_eq!(
            rmpv::decode::read_value(&mut &out[..]).expect("msgpack"),
            map(vec![
                ("Data", Value::from("ret")),
                ("EventId", Value::from(7))
            ])
        );
        let mut out = Vec::new();
        write_call_result(&mut out, 7, "kong.log.err", &[0x91, 0xa1, b'x']);
        assert_eq!(
            rmpv::decode::read_value(&mut &out[..]).expect("msgpack"),
            map(vec![
                (
                    "Data",
                    map(vec![
                        ("Method", Value::from("kong.log.err")),
                        ("Args", Value::Array(vec![Value::from("x")])),
                    ])
                ),
                ("EventId", Value::from(7)),
            ])
        );
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
