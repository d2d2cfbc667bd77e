//! Kong's reply to a PDK call (the result message of its ProtoBuf:1 method)
//! as the value the plugin gets, in the shapes MessagePack:1 gives where
//! Kong's mapping allows (docs/protobuf.md, "Types").
//!
//! Kong sends an empty frame when the PDK function returned nil; for a
//! scalar that is the message's default ("", 0, false), which cannot be told
//! from a real one, while an empty entity (route, consumer...) is `None`.

use prost::Message;
use rmpv::Value;

use super::messages as pb;
use super::methods::Ret;
use super::values::{from_pb_struct, from_pb_value, lua_string};
use crate::events::Answer;

/// The reply could not be decoded as its method's result message.
#[derive(Debug)]
pub struct ReplyError(pub String);

pub fn decode_reply(ret: Ret, bytes: &[u8]) -> Result<Answer, ReplyError> {
    let bad = |e: prost::DecodeError| ReplyError(format!("{}: {e}", ret.message()));
    let empty = bytes.is_empty();
    let v = match ret {
        Ret::Empty => return Ok(Answer::Value(None)),
        Ret::String => Value::from(pb::String::decode(bytes).map_err(bad)?.v),
        Ret::Int => Value::from(pb::Int::decode(bytes).map_err(bad)?.v),
        Ret::Number => Value::F64(pb::Number::decode(bytes).map_err(bad)?.v),
        Ret::Bool => Value::Boolean(pb::Bool::decode(bytes).map_err(bad)?.v),
        Ret::ByteString => lua_string(pb::ByteString::decode(bytes).map_err(bad)?.v),
        Ret::Value => from_pb_value(&prost_types::Value::decode(bytes).map_err(bad)?),
        Ret::Struct => multimap(from_pb_struct(
            &prost_types::Struct::decode(bytes).map_err(bad)?,
        )),
        Ret::RawBody => {
            use pb::raw_body_result::Kind;
            match pb::RawBodyResult::decode(bytes).map_err(bad)?.kind {
                Some(Kind::Content(body)) => lua_string(body),
                None => Value::from(""),
                Some(Kind::BodyFilepath(path)) => {
                    return Ok(Answer::Error(format!(
                        "the request body was buffered to a file ({path}): read it from there"
                    )))
                }
                Some(Kind::Error(e)) => return Ok(Answer::Error(e)),
            }
        }
        Ret::UriCaptures => {
            let c = pb::UriCapturesResult::decode(bytes).map_err(bad)?;
            let mut named: Vec<_> = c.named.into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            map(vec![
                (
                    "unnamed",
                    Value::Array(c.unnamed.into_iter().map(lua_string).collect()),
                ),
                (
                    "named",
                    Value::Map(
                        named
                            .into_iter()
                            .map(|(k, v)| (Value::from(k), lua_string(v)))
                            .collect(),
                    ),
                ),
            ])
        }
        _ if empty => return Ok(Answer::Value(None)),
        Ret::Route => route(pb::Route::decode(bytes).map_err(bad)?),
        Ret::Service => service(pb::Service::decode(bytes).map_err(bad)?),
        Ret::Consumer => consumer(pb::Consumer::decode(bytes).map_err(bad)?),
        Ret::Credential => {
            let c = pb::AuthenticatedCredential::decode(bytes).map_err(bad)?;
            map(vec![
                ("id", Value::from(c.id)),
                ("consumer_id", Value::from(c.consumer_id)),
            ])
        }
        Ret::MemoryStats => memory_stats(pb::MemoryStats::decode(bytes).map_err(bad)?),
    };
    Ok(Answer::Value(Some(v)))
}

/// A header or query table in the shape MessagePack:1 gives it (Kong
/// reshapes it there, docs/protocol.md §6.1; on ProtoBuf:1 it sends the Lua
/// table as it is): every value a list, a bare query flag (`true`) an empty
/// one. The four functions that return a `Struct` are exactly those.
fn multimap(table: Value) -> Value {
    let Value::Map(entries) = table else {
        return table;
    };
    Value::Map(
        entries
            .into_iter()
            .filter(|(_, v)| !v.is_nil())
            .map(|(k, v)| {
                let v = match v {
                    Value::Boolean(true) => Value::Array(Vec::new()),
                    Value::Array(items) => Value::Array(items),
                    one => Value::Array(vec![one]),
                };
                (k, v)
            })
            .collect(),
    )
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn strings(items: Vec<String>) -> Value {
    Value::Array(items.into_iter().map(Value::from).collect())
}

fn id_table(id: String) -> Value {
    map(vec![("id", Value::from(id))])
}

fn route(r: pb::Route) -> Value {
    map(vec![
        ("id", Value::from(r.id)),
        ("created_at", Value::from(r.created_at)),
        ("updated_at", Value::from(r.updated_at)),
        ("name", Value::from(r.name)),
        ("protocols", strings(r.protocols)),
        ("methods", strings(r.methods)),
        ("hosts", strings(r.hosts)),
        ("paths", strings(r.paths)),
        ("headers", strings(r.headers)),
        (
            "https_redirect_status_code",
            Value::from(r.https_redirect_status_code),
        ),
        ("regex_priority", Value::from(r.regex_priority)),
        ("strip_path", Value::Boolean(r.strip_path)),
        ("preserve_host", Value::Boolean(r.preserve_host)),
        ("snis", strings(r.snis)),
        ("sources", strings(r.sources)),
        ("destinations", strings(r.destinations)),
        ("tags", strings(r.tags)),
        ("service", r.service.map_or(Value::Nil, |s| id_table(s.id))),
    ])
}

fn service(s: pb::Service) -> Value {
    map(vec![
        ("id", Value::from(s.id)),
        ("created_at", Value::from(s.created_at)),
        ("updated_at", Value::from(s.updated_at)),
        ("name", Value::from(s.name)),
        ("retries", Value::from(s.retries)),
        ("protocol", Value::from(s.protocol)),
        ("host", Value::from(s.host)),
        ("port", Value::from(s.port)),
        ("path", Value::from(s.path)),
        ("connect_timeout", Value::from(s.connect_timeout)),
        ("write_timeout", Value::from(s.write_timeout)),
        ("read_timeout", Value::from(s.read_timeout)),
        ("tags", strings(s.tags)),
        (
            "client_certificate",
            s.client_certificate.map_or(Value::Nil, |c| id_table(c.id)),
        ),
    ])
}

fn consumer(c: pb::Consumer) -> Value {
    map(vec![
        ("id", Value::from(c.id)),
        ("created_at", Value::from(c.created_at)),
        ("username", Value::from(c.username)),
        ("custom_id", Value::from(c.custom_id)),
        ("tags", strings(c.tags)),
    ])
}

fn memory_stats(m: pb::MemoryStats) -> Value {
    let dict = |d: Option<pb::memory_stats::lua_shared_dicts::DictStats>| {
        d.map_or(Value::Nil, |d| {
            map(vec![
                ("allocated_slabs", Value::from(d.allocated_slabs)),
                ("capacity", Value::from(d.capacity)),
            ])
        })
    };
    let dicts = m.lua_shared_dicts.map_or(Value::Nil, |d| {
        map(vec![
            ("kong", dict(d.kong)),
            ("kong_db_cache", dict(d.kong_db_cache)),
        ])
    });
    let vms = m
        .workers_lua_vms
        .into_iter()
        .map(|w| {
            map(vec![
                ("http_allocated_gc", Value::from(w.http_allocated_gc)),
                ("pid", Value::from(w.pid)),
            ])
        })
        .collect();
    map(vec![
        ("lua_shared_dicts", dicts),
        ("workers_lua_vms", Value::Array(vms)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ret: Ret, bytes: &[u8]) -> Option<Value> {
        match decode_reply(ret, bytes).expect("decodes") {
            Answer::Value(v) => v,
            Answer::Error(e) => panic!("{e}"),
        }
    }

    #[test]
    fn scalars_are_unwrapped_and_nil_is_the_default() {
        let host = pb::String {
            v: "example.com".into(),
        }
        .encode_to_vec();
        assert_eq!(value(Ret::String, &host), Some(Value::from("example.com")));
        assert_eq!(value(Ret::String, b""), Some(Value::from("")));
        assert_eq!(value(Ret::Int, b""), Some(Value::from(0)));
        assert_eq!(value(Ret::Bool, b""), Some(Value::Boolean(false)));
        assert_eq!(value(Ret::Empty, b""), None);
    }

    #[test]
    fn header_structs_become_dicts_of_lists_as_on_msgpack() {
        let mut fields = std::collections::BTreeMap::new();
        let s = |v: &str| prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(v.into())),
        };
        fields.insert("host".to_string(), s("a"));
        fields.insert(
            "debug".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::BoolValue(true)),
            },
        );
        fields.insert(
            "accept".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue {
                        values: vec![s("x"), s("y")],
                    },
                )),
            },
        );
        let bytes = prost_types::Struct { fields }.encode_to_vec();
        assert_eq!(
            value(Ret::Struct, &bytes),
            Some(map(vec![
                (
                    "accept",
                    Value::Array(vec![Value::from("x"), Value::from("y")])
                ),
                ("debug", Value::Array(vec![])),
                ("host", Value::Array(vec![Value::from("a")])),
            ]))
        );
    }

    #[test]
    fn bodies_are_strings_and_a_file_body_is_an_error() {
        use pb::raw_body_result::Kind;
        let body = pb::RawBodyResult {
            kind: Some(Kind::Content(b"{}".to_vec())),
        }
        .encode_to_vec();
        assert_eq!(value(Ret::RawBody, &body), Some(Value::from("{}")));
        let file = pb::RawBodyResult {
            kind: Some(Kind::BodyFilepath("/tmp/b".into())),
        }
        .encode_to_vec();
        assert!(
            matches!(decode_reply(Ret::RawBody, &file), Ok(Answer::Error(e)) if e.contains("/tmp/b"))
        );
        let raw = pb::ByteString { v: vec![0xff] }.encode_to_vec();
        assert!(matches!(
            value(Ret::ByteString, &raw),
            Some(Value::String(_))
        ));
    }

    #[test]
    fn entities_are_tables_and_none_when_empty() {
        assert_eq!(value(Ret::Consumer, b""), None);
        let c = pb::Consumer {
            id: "c1".into(),
            username: "ann".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let got = value(Ret::Consumer, &c).expect("a consumer");
        let id = got
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("id")));
        assert_eq!(id.map(|(_, v)| v.clone()), Some(Value::from("c1")));
        let r = pb::Route {
            id: "r1".into(),
            service: Some(pb::ServiceKey { id: "s1".into() }),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(value(Ret::Route, &r).is_some());
    }

    #[test]
    fn a_reply_that_is_not_the_message_is_an_error() {
        assert!(decode_reply(Ret::String, &[0xff, 0xff, 0xff]).is_err());
    }
}
