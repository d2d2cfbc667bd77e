//! A PDK call's arguments, as the proxy encoded them (a MessagePack array,
//! `pdk/proxy.rs`), to the input message of its ProtoBuf:1 method.
//!
//! Kong unpacks each message into the Lua function's arguments; where a
//! message cannot say what the plugin passed (a table as an exit body, a
//! non-string key), the call is refused here with the reason rather than
//! sent changed.

use std::fmt::{self, Display};

use prost::Message;
use rmpv::Value;

use super::messages as pb;
use super::methods::{Arg, PbMethod};
use super::values::{kind_of, text, to_pb_list, to_pb_struct, to_pb_value, ConvError};

/// What go-pdk sends for a header or query table's maximum count, which
/// Kong requires (0 is refused).
pub const DEFAULT_MAX_COUNT: i32 = 100;

/// The input message of `method` for the MessagePack-encoded `args`.
pub fn encode_args(method: &PbMethod, args: &[u8]) -> Result<Vec<u8>, ConvError> {
    let items = match rmpv::decode::read_value(&mut &args[..]) {
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(e) => return Err(ConvError(format!("arguments not encodable: {e}"))),
    };
    let nil = Value::Nil;
    let at = |i: usize| items.get(i).unwrap_or(&nil);
    let name = method.name;
    Ok(match method.arg {
        Arg::Empty => Vec::new(),
        Arg::String => pb::String {
            v: opt_text(at(0), Of(name, "argument 1"))?,
        }
        .encode_to_vec(),
        Arg::Int => pb::Int {
            v: int32(at(0), Of(name, "argument 1"))?,
        }
        .encode_to_vec(),
        Arg::MaxCount => {
            let v = match at(0) {
                Value::Nil => DEFAULT_MAX_COUNT,
                n => int32(n, Of(name, "max count"))?,
            };
            if v < 1 {
                return Err(ConvError(format!(
                    "{name}: the maximum count must be >= 1, not {v}"
                )));
            }
            pb::Int { v }.encode_to_vec()
        }
        Arg::Bool => pb::Bool {
            v: boolean(at(0), Of(name, "argument 1"))?,
        }
        .encode_to_vec(),
        Arg::ByteString => pb::ByteString {
            v: bytes(at(0), Of(name, "argument 1"))?,
        }
        .encode_to_vec(),
        Arg::Kv => pb::Kv {
            k: opt_text(at(0), Of(name, "argument 1"))?,
            // An absent value is Lua's nil; a None inside a table is sent
            // as protobuf's null (docs/protobuf.md, "Types").
            v: match at(1) {
                Value::Nil => None,
                v => Some(to_pb_value(v).map_err(|e| within(name, e))?),
            },
        }
        .encode_to_vec(),
        Arg::ListValue => to_pb_list(&items)
            .map_err(|e| within(name, e))?
            .encode_to_vec(),
        Arg::Struct => to_pb_struct(at(0))
            .map_err(|e| within(name, e))?
            .encode_to_vec(),
        Arg::ExitArgs => pb::ExitArgs {
            status: int32(at(0), Of(name, "status"))?,
            body: match at(1) {
                Value::Nil => Vec::new(),
                v @ (Value::String(_) | Value::Binary(_)) => bytes(v, "body")?,
                other => {
                    return Err(ConvError(format!(
                        "{name}: a body is bytes or str on ProtoBuf:1, not {} (encode it yourself, \
                         e.g. json.dumps, and set Content-Type; or serve with --protocol msgpack)",
                        kind_of(other)
                    )))
                }
            },
            headers: match at(2) {
                Value::Nil => None,
                h => Some(to_pb_struct(h).map_err(|e| within(name, e))?),
            },
        }
        .encode_to_vec(),
        Arg::Target => pb::Target {
            host: opt_text(at(0), Of(name, "host"))?,
            port: int32(at(1), Of(name, "port"))?,
        }
        .encode_to_vec(),
        Arg::ConsumerSpec => pb::ConsumerSpec {
            id: opt_text(at(0), Of(name, "id"))?,
            by_username: boolean(at(1), Of(name, "by_username"))?,
        }
        .encode_to_vec(),
        Arg::AuthenticateArgs => pb::AuthenticateArgs {
            consumer: match at(0) {
                Value::Nil => None,
                c => Some(consumer(c, name)?),
            },
            credential: match at(1) {
                Value::Nil => None,
                c => Some(pb::AuthenticatedCredential {
                    id: field_text(c, "id", name)?,
                    consumer_id: field_text(c, "consumer_id", name)?,
                }),
            },
        }
        .encode_to_vec(),
    })
}

/// Names an argument of a call, as "{function}: {argument}", for an error
/// message: written only when the call is refused, never per call.
struct Of<'a>(&'a str, &'a str);

impl Display for Of<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

fn within(name: &str, e: ConvError) -> ConvError {
    ConvError(format!("{name}: {e}"))
}

/// A string argument; an absent one is Lua's nil, which arrives as "".
fn opt_text(v: &Value, what: impl Display) -> Result<String, ConvError> {
    match v {
        Value::Nil => Ok(String::new()),
        v => text(v, what),
    }
}

/// A 32-bit integer: every `Int` of this wire is one.
fn int32(v: &Value, what: impl Display) -> Result<i32, ConvError> {
    let n = match v {
        Value::Integer(i) => i.as_i64(),
        Value::F64(f) if f.fract() == 0.0 => Some(*f as i64),
        Value::Nil => return Err(ConvError(format!("{what} is required"))),
        other => {
            return Err(ConvError(format!(
                "{what} must be an int, not {}",
                kind_of(other)
            )))
        }
    };
    n.and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
        ConvError(format!(
            "{what} does not fit in 32 bits (ProtoBuf:1's integers)"
        ))
    })
}

fn boolean(v: &Value, what: impl Display) -> Result<bool, ConvError> {
    match v {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(*b),
        other => Err(ConvError(format!(
            "{what} must be a bool, not {}",
            kind_of(other)
        ))),
    }
}

fn bytes(v: &Value, what: impl Display) -> Result<Vec<u8>, ConvError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Binary(b) => Ok(b.clone()),
        other => Err(ConvError(format!(
            "{what} must be bytes or str, not {}",
            kind_of(other)
        ))),
    }
}

fn field<'a>(table: &'a Value, key: &str) -> Option<&'a Value> {
    table
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn field_text(table: &Value, key: &str, name: &str) -> Result<String, ConvError> {
    match field(table, key) {
        None | Some(Value::Nil) => Ok(String::new()),
        Some(v) => text(v, Of(name, key)),
    }
}

/// The fields of a consumer the wire carries; others are dropped by Kong's
/// schema of the message (docs/protobuf.md).
fn consumer(c: &Value, name: &str) -> Result<pb::Consumer, ConvError> {
    if c.as_map().is_none() {
        return Err(ConvError(format!(
            "{name}: a consumer must be a dict, not {}",
            kind_of(c)
        )));
    }
    let tags = match field(c, "tags") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| text(t, "a tag"))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(pb::Consumer {
        id: field_text(c, "id", name)?,
        created_at: field(c, "created_at")
            .and_then(Value::as_f64)
            .map_or(0, |t| t as i64),
        username: field_text(c, "username", name)?,
        custom_id: field_text(c, "custom_id", name)?,
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::methods::find;

    fn call(name: &str, args: Vec<Value>) -> Result<Vec<u8>, ConvError> {
        let mut packed = Vec::new();
        rmpv::encode::write_value(&mut packed, &Value::Array(args)).expect("encode");
        encode_args(find(name).expect("a ProtoBuf:1 function"), &packed)
    }

    #[test]
    fn scalars_are_wrapped() {
        let got = call("kong.request.get_header", vec![Value::from("host")]).expect("ok");
        assert_eq!(pb::String::decode(&got[..]).expect("String").v, "host");
        let got = call("kong.response.set_status", vec![Value::from(204)]).expect("ok");
        assert_eq!(pb::Int::decode(&got[..]).expect("Int").v, 204);
        assert!(call("kong.request.get_method", vec![])
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn table_counts_default_to_go_pdks_and_refuse_zero() {
        let got = call("kong.request.get_headers", vec![]).expect("ok");
        assert_eq!(pb::Int::decode(&got[..]).expect("Int").v, 100);
        assert!(call("kong.request.get_headers", vec![Value::from(0)]).is_err());
    }

    #[test]
    fn integers_are_32_bit() {
        let err =
            call("kong.response.set_status", vec![Value::from(1i64 << 40)]).expect_err("refused");
        assert!(err.0.contains("32 bits"), "{err}");
    }

    #[test]
    fn exit_takes_bytes_and_a_header_struct() {
        let headers = Value::Map(vec![(Value::from("x-a"), Value::from("1"))]);
        let got = call(
            "kong.response.exit",
            vec![Value::from(403), Value::from("no"), headers],
        )
        .expect("ok");
        let exit = pb::ExitArgs::decode(&got[..]).expect("ExitArgs");
        assert_eq!((exit.status, exit.body.as_slice()), (403, &b"no"[..]));
        assert!(exit.headers.expect("headers").fields.contains_key("x-a"));
        let table_body = Value::Map(vec![(Value::from("a"), Value::from(1))]);
        let err =
            call("kong.response.exit", vec![Value::from(200), table_body]).expect_err("refused");
        assert!(err.0.contains("bytes or str on ProtoBuf:1"), "{err}");
    }

    #[test]
    fn kv_keeps_the_value_type_and_nil() {
        let got = call(
            "kong.ctx.shared.set",
            vec![Value::from("k"), Value::from(2)],
        )
        .expect("ok");
        let kv = pb::Kv::decode(&got[..]).expect("KV");
        assert_eq!(kv.k, "k");
        assert!(kv.v.is_some());
        let got = call("kong.ctx.shared.set", vec![Value::from("k")]).expect("ok");
        assert!(pb::Kv::decode(&got[..]).expect("KV").v.is_none());
    }

    #[test]
    fn log_arguments_are_a_list() {
        let got = call("kong.log.err", vec![Value::from("a"), Value::from(1)]).expect("ok");
        assert_eq!(
            prost_types::ListValue::decode(&got[..])
                .expect("list")
                .values
                .len(),
            2
        );
    }

    #[test]
    fn authenticate_keeps_the_fields_of_the_messages() {
        let consumer = Value::Map(vec![
            (Value::from("id"), Value::from("c1")),
            (Value::from("username"), Value::from("ann")),
            (Value::from("extra"), Value::from("dropped")),
        ]);
        let credential = Value::Map(vec![(Value::from("id"), Value::from("k1"))]);
        let got = call("kong.client.authenticate", vec![consumer, credential]).expect("ok");
        let args = pb::AuthenticateArgs::decode(&got[..]).expect("args");
        let c = args.consumer.expect("consumer");
        assert_eq!((c.id.as_str(), c.username.as_str()), ("c1", "ann"));
        assert_eq!(args.credential.expect("credential").id, "k1");
    }
}
