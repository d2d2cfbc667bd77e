"""Request and response bodies by content type, as ``get_body``/``set_body`` treat them.

``kong.request.get_body(mimetype, max_args)`` and ``kong.service.response.get_body``
pick a decoder from ``mimetype`` or else the Content-Type header (lower-cased,
parameters after ``;`` dropped, prefix match):

* ``application/x-www-form-urlencoded``: the arguments table of ``args.decode_args``;
* ``application/json``: the decoded JSON, which must be an object or array
  ("invalid json body" otherwise); JSON ``null`` is ``cjson.null`` (``NULL``);
* ``multipart/form-data``: name -> value, a list when a name repeats;
* no content type: nil, "missing content type"; anything else: nil,
  "unsupported content type '<type>'".

Kong returns (table, err, mimetype); only the first value reaches the plugin
(docs/protocol.md §5.3), but the kit keeps the error for its log of PDK calls.

``kong.service.request.set_body(args, mimetype)`` encodes: form (sorted
``encode_args``), JSON (cjson), multipart (one part per key in sorted order,
with the request's boundary or a new one).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

from kong_pdk.testing.http.args import decode_args, encode_args
from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import NULL

__all__ = ["Decoded", "decode_body", "encode_body", "lua_json", "lua_table_for_cjson"]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = "multipart/form-data"


@dataclass(frozen=True)
class Decoded:
    value: object  # None for nil
    err: str | None
    mimetype: str | None


def _base_type(content_type: str) -> str:
    return content_type.lower().split(";", 1)[0]


def lua_json(text: bytes | str) -> object:
    """``cjson.decode``: JSON null becomes ``NULL``; None when the text is not JSON."""
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return None


def _pairs(items: list[tuple[str, object]]) -> dict[str, object]:
    return {k: (NULL if v is None else v) for k, v in items}


def _json_nulls_in_lists(value: object) -> object:
    if isinstance(value, list):
        return [NULL if v is None else _json_nulls_in_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_nulls_in_lists(v) for k, v in value.items()}
    return value


def decode_body(
    body: bytes,
    content_type: str | None,
    mimetype: str | None = None,
    max_args: int = 100,
) -> Decoded:
    chosen = mimetype or content_type
    if not chosen:
        return Decoded(None, "missing content type", None)
    base = _base_type(chosen)
    if base.startswith(FORM):
        text = body.decode("utf-8", "surrogateescape")
        return Decoded(decode_args(text, max_args), None, FORM)
    if base.startswith(JSON):
        value = lua_json(body)
        if not isinstance(value, (dict, list)):
            return Decoded(None, "invalid json body", JSON)
        return Decoded(_json_nulls_in_lists(value), None, JSON)
    if base.startswith(MULTIPART):
        parts = parse_multipart(body, chosen)
        if parts is None:
            return Decoded(None, "unable to decode multipart body", MULTIPART)
        return Decoded(parts, None, MULTIPART)
    return Decoded(None, f"unsupported content type '{chosen}'", base)


def _boundary(content_type: str) -> str | None:
    m = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type, re.IGNORECASE)
    if not m:
        return None
    return m.group(1) or m.group(2)


def parse_multipart(body: bytes, content_type: str) -> dict[str, object] | None:
    boundary = _boundary(content_type)
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    out: dict[str, object] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, value = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, sep, value = chunk.partition(b"\n\n")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        elif value.endswith(b"\n"):
            value = value[:-1]
        m = re.search(rb'name="([^"]*)"', head, re.IGNORECASE)
        if not m:
            continue
        name = m.group(1).decode("utf-8", "surrogateescape")
        text = value.decode("utf-8", "surrogateescape")
        have = out.get(name)
        if have is None:
            out[name] = text
        elif isinstance(have, list):
            have.append(text)
        else:
            out[name] = [have, text]
    return out


def lua_table_for_cjson(value: object) -> object:
    """A value that crossed msgpack into Lua, ready for ``cjson.encode``.

    lua-MessagePack gives plain tables, so an empty array arrives as an empty
    table, which cjson writes as ``{}`` (docs/protocol.md §3.2).
    """
    if isinstance(value, list):
        if not value:
            return {}
        return [lua_table_for_cjson(v) for v in value]
    if isinstance(value, Mapping):
        if not value:
            return {}
        return {k: lua_table_for_cjson(v) for k, v in value.items()}
    return value


def encode_body(args: Mapping[object, object], mime: str) -> tuple[bytes, str]:
    """(body, content type) for ``set_body``; raises ``LuaError`` like Kong's ``error()``."""
    base = _base_type(mime)
    if base == FORM:
        return encode_args(args).encode("utf-8", "surrogateescape"), mime
    if base == JSON:
        try:
            return cjson_encode(lua_table_for_cjson(args)).encode("utf-8", "surrogateescape"), mime
        except (TypeError, ValueError) as exc:
            raise LuaError(str(exc)) from None
    if base == MULTIPART:
        return _encode_multipart(args, mime)
    raise LuaError(f"unsupported content type {mime}")


def _encode_multipart(args: Mapping[object, object], mime: str) -> tuple[bytes, str]:
    boundary = _boundary(mime) or str(random.randint(1, 10**10))
    keys: list[str] = []
    for k, v in args.items():
        if not isinstance(k, str):
            raise LuaError(f"invalid key {k!r}: got {type(k).__name__}, expected string")
        if not isinstance(v, (str, bytes, int, float, bool)):
            raise LuaError(f"invalid value {k!r}: got table, expected string, number or boolean")
        keys.append(k)
    out: list[str] = []
    for k in sorted(keys):
        v = args[k]
        text = v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else _lua_tostring(v)
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{text}\r\n')
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode("utf-8", "surrogateescape"), f"{MULTIPART}; boundary={boundary}"


def _lua_tostring(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return "%.14g" % value
    return str(value)
