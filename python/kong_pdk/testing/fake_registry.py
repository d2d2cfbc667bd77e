"""The table of fake PDK functions: dotted name -> implementation.

An implementation takes the request's ``Exchange`` and the arguments exactly as
the Lua function receives them (after Kong's nil cut, docs/protocol.md §11.2), and
returns what the Lua function returns: a value, or ``LuaMulti`` for several
(only the first reaches a 3.x plugin, §5.3). It raises ``LuaError`` where the
Lua function calls ``error()``; Kong then abandons the event (§5.2.5).

Results are Lua values in Python clothes: the emulator packs them with Kong's
encoder and applies the multimap, bin and JSON-text rewrites (§6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kong_pdk.testing.errors import LuaError
from kong_pdk.testing.exchange import Exchange
from kong_pdk.testing.lua import is_lua_number

__all__ = ["Impl", "IMPLS", "pdk", "need_str", "need_number", "need_table", "opt_arg", "lua_tostring"]

Impl = Callable[..., object]
IMPLS: dict[str, Impl] = {}

F = TypeVar("F", bound=Callable[..., object])


def pdk(*names: str) -> Callable[[F], F]:
    """Register an implementation under one or more dotted PDK names."""

    def register(fn: F) -> F:
        for name in names:
            if name in IMPLS:
                raise RuntimeError(f"{name} is implemented twice")
            IMPLS[name] = fn
        return fn

    return register


def opt_arg(args: tuple[object, ...], index: int) -> object:
    return args[index] if len(args) > index else None


def need_str(value: object, what: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
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
        from kong_pdk.testing.cjson import cjson_encode

        try:
            return cjson_encode(value)
        except (TypeError, ValueError):
            return repr(value)
    return str(value)


def _check_ex(ex: Exchange) -> Exchange:  # pragma: no cover - typing helper
    return ex
