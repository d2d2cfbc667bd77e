//! MessagePack values (`rmpv::Value`, what the PDK proxy encodes and what
//! the plugin gets back) to and from Google's `Value`/`Struct`/`ListValue`,
//! with Kong's mapping: numbers are doubles (an integral one comes back as
//! an integer, as Lua's would on MessagePack:1), map keys are strings.

use prost_types::value::Kind;
use prost_types::{ListValue, NullValue, Struct, Value as PbValue};
use rmpv::Value;

/// A value the wire cannot carry, or an argument of the wrong type.
#[derive(Debug, PartialEq, Eq)]
pub struct ConvError(pub String);

impl std::fmt::Display for ConvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that must be UTF-8 on this wire (protobuf `string`).
pub fn text(v: &Value, what: impl std::fmt::Display) -> Result<String, ConvError> {
    match v {
        Value::String(s) => s
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ConvError(format!("{what} is not valid UTF-8"))),
        Value::Binary(b) => String::from_utf8(b.clone())
            .map_err(|_| ConvError(format!("{what} is not valid UTF-8"))),
        other => Err(ConvError(format!(
            "{what} must be a str, not {}",
            kind_of(other)
        ))),
    }
}

/// A Lua string as a MessagePack string: its bytes kept as they are, even
/// when they are not UTF-8 (Python then decodes them with
/// `surrogateescape`, as on MessagePack:1).
pub fn lua_string(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => Value::String(s.into()),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut packed = Vec::with_capacity(bytes.len() + 5);
            // The length fits: it came in a frame bounded far below 4 GiB.
            let _ = rmp::encode::write_str_len(&mut packed, bytes.len() as u32);
            packed.extend_from_slice(&bytes);
            rmpv::decode::read_value(&mut packed.as_slice()).unwrap_or(Value::Binary(bytes))
        }
    }
}

/// The Python-ish name of a value's type, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "None",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "int",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "str",
        Value::Binary(_) => "bytes",
        Value::Array(_) => "list",
        Value::Map(_) => "dict",
        Value::Ext(..) => "ext",
    }
}

pub fn to_pb_value(v: &Value) -> Result<PbValue, ConvError> {
    let kind = match v {
        Value::Nil => Kind::NullValue(NullValue::NullValue as i32),
        Value::Boolean(b) => Kind::BoolValue(*b),
        Value::Integer(i) => Kind::NumberValue(i.as_f64().unwrap_or_default()),
        Value::F32(f) => Kind::NumberValue(f64::from(*f)),
        Value::F64(f) => Kind::NumberValue(*f),
        Value::String(_) | Value::Binary(_) => Kind::StringValue(text(v, "a string")?),
        Value::Array(items) => Kind::ListValue(to_pb_list(items)?),
        Value::Map(_) => Kind::StructValue(to_pb_struct(v)?),
        Value::Ext(..) => return Err(ConvError("an ext value has no protobuf form".into())),
    };
    Ok(PbValue { kind: Some(kind) })
}

pub fn to_pb_list(items: &[Value]) -> Result<ListValue, ConvError> {
    Ok(ListValue {
        values: items.iter().map(to_pb_value).collect::<Result<_, _>>()?,
    })
}

/// A table with string keys (`{}` may arrive as an empty list).
pub fn to_pb_struct(v: &Value) -> Result<Struct, ConvError> {
    let entries: &[(Value, Value)] = match v {
        Value::Map(entries) => entries,
        Value::Array(items) if items.is_empty() => &[],
        Value::Nil => &[],
        other => {
            return Err(ConvError(format!(
                "a table must be a dict, not {}",
                kind_of(other)
            )))
        }
    };
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in entries {
        let key = match k {
            Value::String(_) | Value::Binary(_) => text(k, "a key")?,
            other => {
                return Err(ConvError(format!(
                    "a table's keys must be str on ProtoBuf:1, not {}",
                    kind_of(other)
                )))
            }
        };
        fields.insert(key, to_pb_value(v)?);
    }
    Ok(Struct { fields })
}

pub fn from_pb_value(v: &PbValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Nil,
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => Value::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Value::Boolean(*b),
        Some(Kind::StructValue(s)) => from_pb_struct(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_pb_value).collect()),
    }
}

pub fn from_pb_struct(s: &Struct) -> Value {
    Value::Map(
        s.fields
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), from_pb_value(v)))
            .collect(),
    )
}

/// An integral double within 2^53 as an integer, as Lua's MessagePack
/// encoder sends it; anything else stays a float.
fn number(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        Value::from(n as i64)
    } else {
        Value::F64(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn tables_go_round_the_wire() {
        let headers = map(vec![
            (
                "accept",
                Value::Array(vec![Value::from("a"), Value::from("b")]),
            ),
            ("x-one", Value::from("1")),
            ("x-flag", Value::Boolean(true)),
            ("x-n", Value::from(3)),
            ("x-half", Value::F64(0.5)),
            ("nested", map(vec![("k", Value::Nil)])),
        ]);
        let pb = to_pb_struct(&headers).expect("struct");
        let back = from_pb_struct(&pb);
        // Keys come back sorted (a protobuf map has no order).
        let expected = map(vec![
            (
                "accept",
                Value::Array(vec![Value::from("a"), Value::from("b")]),
            ),
            ("nested", map(vec![("k", Value::Nil)])),
            ("x-flag", Value::Boolean(true)),
            ("x-half", Value::F64(0.5)),
            ("x-n", Value::from(3)),
            ("x-one", Value::from("1")),
        ]);
        assert_eq!(back, expected);
    }

    #[test]
    fn what_the_wire_cannot_carry_is_named() {
        let bad_key = Value::Map(vec![(Value::from(1), Value::from("x"))]);
        assert!(to_pb_struct(&bad_key)
            .expect_err("refused")
            .0
            .contains("keys must be str"));
        assert!(to_pb_struct(&Value::from("x"))
            .expect_err("refused")
            .0
            .contains("not str"));
        assert!(text(&Value::from(1), "the name")
            .expect_err("refused")
            .0
            .contains("not int"));
        assert!(to_pb_value(&Value::Ext(1, vec![])).is_err());
    }

    #[test]
    fn lua_strings_keep_their_bytes() {
        assert_eq!(lua_string(b"ok".to_vec()), Value::from("ok"));
        match lua_string(vec![0xff, b'a']) {
            Value::String(s) => assert_eq!(s.as_bytes(), &[0xff, b'a']),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integral_numbers_come_back_as_integers() {
        let v = |n: f64| {
            from_pb_value(&PbValue {
                kind: Some(Kind::NumberValue(n)),
            })
        };
        assert_eq!(v(200.0), Value::from(200));
        assert_eq!(v(1.5), Value::F64(1.5));
        assert_eq!(v(1e300), Value::F64(1e300));
    }
}
