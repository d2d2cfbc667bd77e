"""Kong's header argument checks and value normalisation (kong.pdk.private.checks).

A header name must be a string; a value a string, number, boolean or an array of
strings (numbers and booleans are written with ``tostring``). A bad argument is
a Lua ``error()``, so the event is abandoned (docs/protocol.md §5.2.5).
"""

from __future__ import annotations

from collections.abc import Mapping

from kong_pdk.testing.fake.lua_args import lua_tostring
from kong_pdk.testing.kong.errors import LuaError

__all__ = ["header_name", "header_values", "header_table", "plain_header_name"]


def header_name(name: object) -> str:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    if not isinstance(name, str):
        raise LuaError(f"invalid header name {lua_tostring(name)!r}: got {_lua_type(name)}, expected string")
    return name


def plain_header_name(name: object) -> str:
    """The name argument of ``get_header``/``clear_header``: a string, refused with
    Kong's shorter message (the setters' check is ``header_name``)."""
    if not isinstance(name, str):
        raise LuaError("header name must be a string")
    return name


def header_values(name: str, value: object) -> list[str]:
    if isinstance(value, (str, bytes, int, float, bool)):
        return [lua_tostring(value)]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if not isinstance(item, (str, bytes)):
                raise LuaError(
                    f"invalid header value in array {name!r}: got {_lua_type(item)}, expected string"
                )
            out.append(lua_tostring(item))
        return out
    raise LuaError(
        f"invalid header value for {name!r}: got {_lua_type(value)}, expected array of string, string, number or boolean"
    )


def header_table(headers: object) -> list[tuple[str, list[str]]]:
    if isinstance(headers, list) and not headers:
        return []  # an empty table arrives as an empty array (docs/protocol.md §3.2)
    if not isinstance(headers, Mapping):
        raise LuaError("headers must be a nil or table")
    return [(header_name(k), header_values(str(k), v)) for k, v in headers.items()]


def _lua_type(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (str, bytes)):
        return "string"
    return "table"
