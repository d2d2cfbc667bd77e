"""How the fake PDK reads its arguments as Lua would, and writes values as Lua's ``tostring``.

A missing argument is nil (``opt_arg``); a wrong type is Kong's ``error()``,
raised as ``LuaError`` with Kong's wording (``need_str`` …).
"""

from __future__ import annotations

from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import is_lua_number

__all__ = ["opt_arg", "need_str", "need_bytes", "need_number", "need_table", "lua_tostring"]


def opt_arg(args: tuple[object, ...], index: int) -> object:
    return args[index] if len(args) > index else None


def need_str(value: object, what: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        raise LuaError(f"{what} must be a string")
    return value


def need_bytes(value: object, what: str) -> bytes:
    """A Lua string as the bytes it holds (a raw body): ``str`` is encoded back."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if not isinstance(value, bytes):
        raise LuaError(f"{what} must be a string")
    return value


def need_number(value: object, what: str) -> int | float:
    if not is_lua_number(value):
        raise LuaError(f"{what} must be a number")
    assert isinstance(value, (int, float))
    return value


def need_table(value: object, what: str) -> dict[object, object] | list[object]:
    if not isinstance(value, (dict, list)):
        raise LuaError(f"{what} must be a table")
    return value


def lua_tostring(value: object) -> str:
    """``tostring`` as Lua writes it; tables as JSON-like text for readable logs."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else "%.14g" % value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, (dict, list)):
        try:
            return cjson_encode(value)
        except (TypeError, ValueError):
            return repr(value)
    return str(value)
