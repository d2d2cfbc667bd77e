"""URL-encoded arguments as nginx and Kong read and write them.

Reading (``ngx.req.get_uri_args`` / ``get_post_args``): pairs split on ``&``,
``+`` is a space, percent escapes are decoded; ``k`` alone is ``true`` (a bare
flag), ``k=`` is ``""``, a repeated key becomes a list in order (a flag inside
it stays ``true``: ``?a&a=1`` is ``[True, "1"]``, docs/protocol.md §6.1). Empty keys
and empty pairs are skipped. At most ``max_args`` pairs are read.

Writing (``kong.service.request.set_query`` / ``set_body`` form): each key is
encoded on its own with ``ngx.encode_args`` and the pieces are sorted as
strings, then joined with ``&``; ``true`` is a bare key, ``false`` an empty
piece, a list repeats the key keeping its order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from kong_pdk.testing.kong.errors import LuaError

__all__ = ["decode_args", "encode_args", "escape_uri", "unescape"]

ArgValue = str | bool | list[str | bool]


def unescape(text: str) -> str:
    raw = unquote_to_bytes(text.replace("+", " "))
    return raw.decode("utf-8", "surrogateescape")


def decode_args(query: str, max_args: int = 100) -> dict[str, ArgValue]:
    out: dict[str, ArgValue] = {}
    count = 0
    for piece in query.split("&"):
        if not piece:
            continue
        if count >= max_args:
            break
        count += 1
        key, eq, value = piece.partition("=")
        if not key:
            continue
        name = unescape(key)
        item: str | bool = unescape(value) if eq else True
        have = out.get(name)
        if have is None:
            out[name] = item
        elif isinstance(have, list):
            have.append(item)
        else:
            out[name] = [have, item]
    return out


def escape_uri(text: str) -> str:
    """``ngx.escape_uri``: everything but RFC 3986 unreserved characters is escaped."""
    return quote(text.encode("utf-8", "surrogateescape"), safe="-_.~")


def _value_text(value: object, key: str) -> str:
    if isinstance(value, bool):
        raise AssertionError("unreachable")  # handled by the caller
    if isinstance(value, (int, float)):
        return "%.14g" % value
    if isinstance(value, (str, bytes)):
        return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    raise LuaError(f"attempt to use {type(value).__name__} as query arg value")


def _encode_one(key: str, value: object) -> str:
    if value is True:
        return escape_uri(key)
    if value is False:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [_encode_one(key, v) for v in value]
        return "&".join(p for p in parts if p)
    return f"{escape_uri(key)}={escape_uri(_value_text(value, key))}"


def encode_args(args: Mapping[Any, object]) -> str:
    pieces: list[str] = []
    for key, value in args.items():
        if not isinstance(key, str):
            raise LuaError("arg keys must be strings")
        pieces.append(_encode_one(key, value))
    return "&".join(sorted(pieces))
