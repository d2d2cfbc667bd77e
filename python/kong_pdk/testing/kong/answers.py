"""Where the emulator's PDK answers come from.

Kong really runs the PDK function; the emulator looks the method name up in answer
tables instead (emulator-wide first, then per-call overrides on top). An entry is a
value, a ``LuaMulti`` of several return values, or a callable that receives the
arguments as Lua would (§5.1, §11.2) and returns either. A callable may raise
``LuaError`` to make the call fail the way a Lua error does (§5.2.5).

A name in no table is answered nil when Kong knows such a function, and as an unknown
method ("could not find pdk method", §5.1) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kong_pdk.testing.kong.lua import LuaMulti
from kong_pdk.testing.kong.pdk_facts import pdk_facts

__all__ = ["Answer", "AnswerTable", "Resolution", "resolve"]

Answer = object | Callable[..., object]
AnswerTable = Mapping[str, Answer]


@dataclass(frozen=True)
class Resolution:
    found: bool
    source: str  # "table", "default" or "unknown"
    returns: tuple[object, ...]


def resolve(method: str, args: tuple[object, ...], tables: Sequence[AnswerTable]) -> Resolution:
    for table in reversed(tables):
        if method in table:
            answer = table[method]
            if callable(answer):
                answer = answer(*args)
            return Resolution(True, "table", lua_returns(answer))
    if method in pdk_facts().known:
        return Resolution(True, "default", ())
    return Resolution(False, "unknown", ())


def lua_returns(answer: object) -> tuple[object, ...]:
    if isinstance(answer, LuaMulti):
        return answer.values
    return (answer,)
