"""Kong's conversions between ProtoBuf:1 messages and Lua values (docs/protobuf.md, "Types").

``unwrap``: a PDK call's input message to the arguments the Lua function gets
(scalars unwrapped, ``KV`` to key and value, ``ExitArgs`` to status, body and
headers ...). ``wrap``: the function's first return value to its output message
(nil: the empty frame). Google's ``Value`` comes to Lua as Kong reads it: ``false``
is lost (nil) and null is the string ``"NULL_VALUE"``; numbers are floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import EncodeError

from kong_pdk.testing.kong.errors import LuaError

__all__ = ["unwrap", "wrap"]


def _value(v: Any) -> object:
    kind = v.WhichOneof("kind")
    if kind == "list_value":
        return [_value(item) for item in v.list_value.values]
    if kind == "struct_value":
        return _struct(v.struct_value)
    if kind == "bool_value":
        return True if v.bool_value else None  # Kong's `bool_value or ...` drops false
    if kind == "string_value":
        return str(v.string_value)
    if kind == "number_value":
        return float(v.number_value)
    if kind == "null_value":
        return "NULL_VALUE"
    return None


def _struct(s: Any) -> dict[str, object]:
    return {str(k): _value(v) for k, v in s.fields.items()}


def _table(msg: Any) -> dict[str, Any]:
    table: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return table


def unwrap(type_name: str, msg: Any) -> tuple[object, ...]:
    """The Lua arguments of a call's input message."""
    short = type_name.rsplit(".", 1)[-1]
    if type_name == "google.protobuf.Empty":
        return ()
    if type_name == "google.protobuf.Value":
        return (_value(msg),)
    if type_name == "google.protobuf.ListValue":
        return tuple(_value(v) for v in msg.values)
    if type_name == "google.protobuf.Struct":
        return (_struct(msg),)
    if short in ("Bool", "Number", "Int", "String", "ByteString"):
        return (msg.v,)
    if short == "KV":
        return (msg.k, _value(msg.v) if msg.HasField("v") else None)
    if short == "Target":
        return (msg.host, msg.port)
    if short == "ExitArgs":
        return (msg.status, msg.body, _struct(msg.headers) if msg.HasField("headers") else None)
    if short == "ConsumerSpec":
        return (msg.id, msg.by_username)
    if short == "AuthenticateArgs":
        return (
            _table(msg.consumer) if msg.HasField("consumer") else None,
            _table(msg.credential) if msg.HasField("credential") else None,
        )
    return (_table(msg),)


def _to_value(v: object, out: Any) -> None:
    if isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, (int, float)):
        out.number_value = float(v)
    elif isinstance(v, bytes):
        out.string_value = v.decode("utf-8", "surrogateescape")
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, Mapping):
        _to_struct(v, out.struct_value)
    elif isinstance(v, (list, tuple)):
        lv = out.list_value
        lv.SetInParent()
        for item in v:
            _to_value(item, lv.values.add())
    else:
        out.null_value = 0


def _to_struct(t: Mapping[Any, object], out: Any) -> None:
    out.SetInParent()
    for k, v in t.items():
        _to_value(v, out.fields[str(k)])


def wrap(cls: Any, type_name: str, value: object) -> bytes:
    """The output message of a function that returned ``value`` (nil: b"").

    A value the message cannot hold is a Lua error in Kong (the request fails).
    """
    if value is None or type_name == "google.protobuf.Empty":
        return b""
    msg = cls()
    short = type_name.rsplit(".", 1)[-1]
    try:
        if type_name == "google.protobuf.Value":
            _to_value(value, msg)
        elif type_name == "google.protobuf.Struct":
            if not isinstance(value, Mapping):
                raise TypeError(f"a table expected, got {type(value).__name__}")
            _to_struct(value, msg)
        elif short in ("Bool", "Number", "Int", "String", "ByteString"):
            if short == "String" and isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            if short == "ByteString" and isinstance(value, str):
                value = value.encode("utf-8", "surrogateescape")
            msg.v = value
        elif short == "UriCapturesResult" and isinstance(value, Mapping):
            unnamed = value.get("unnamed") or []
            named = value.get("named") or {}
            msg.unnamed.extend(_raw(x) for x in (unnamed if isinstance(unnamed, (list, tuple)) else []))
            for k, x in (named.items() if isinstance(named, Mapping) else []):
                msg.named[str(k)] = _raw(x)
        elif short == "RawBodyResult":
            if isinstance(value, (bytes, str)):
                msg.content = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            else:
                msg.error = "Can't read request body"
        elif isinstance(value, Mapping):
            json_format.ParseDict(_jsonable(value), msg, ignore_unknown_fields=True)
        else:
            raise TypeError(f"a table expected, got {type(value).__name__}")
        return bytes(msg.SerializeToString())
    except (TypeError, ValueError, EncodeError, json_format.ParseError) as exc:
        raise LuaError(f"cannot encode {value!r} as {type_name}: {exc}") from exc


def _raw(v: object) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode("utf-8", "surrogateescape")


def _jsonable(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v
