"""Lua values and calling conventions that Python has no twin for.

* ``NULL`` is ``cjson.null`` / ``ngx.null``: a value that is *not* nil, so it survives in
  a table, and that Kong packs as MessagePack nil (docs/protocol.md §3.2, §6.3). Python's
  ``None`` is Lua ``nil``: in a table it makes the key vanish.
* ``LuaMulti`` is a multiple return ``return a, b`` (docs/protocol.md §5.3).
* ``unpack_args`` is what ``method(unpack(args))`` hands to a PDK function (§5.1, §11.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

__all__ = ["NULL", "LuaMulti", "unpack_args", "kong_call_args", "is_lua_number"]


@final
class _Null:
    """The type of ``NULL``; there is exactly one instance."""

    _made = False

    def __init__(self) -> None:
        if _Null._made:
            raise TypeError("NULL is a singleton; use kong_pdk.testing.NULL")
        _Null._made = True

    def __repr__(self) -> str:
        return "NULL"

    def __reduce__(self) -> str:
        return "NULL"


NULL: Final = _Null()


@final
class LuaMulti:
    """Several Lua return values, e.g. ``LuaMulti(None, "header not found")``.

    Kong 3.x keeps only the first one; Kong 2.x keeps them all and sends
    ``plugin.StepError`` when the first is nil/false and the second is set (§5.3).
    """

    __slots__ = ("values",)

    def __init__(self, *values: object) -> None:
        self.values: tuple[object, ...] = values

    @property
    def first(self) -> object:
        return self.values[0] if self.values else None

    def __repr__(self) -> str:
        return f"LuaMulti{self.values!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LuaMulti) and other.values == self.values

    def __hash__(self) -> int:
        return hash(self.values)


def is_lua_number(value: object) -> bool:
    """True for what Lua calls a number (Python's bool is an int, but not in Lua)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unpack_args(table: Mapping[object, object]) -> tuple[object, ...]:
    """``unpack(t)``: t[1], t[2], … up to the first nil (docs/protocol.md §11.2).

    LuaJIT's ``#t`` for ``{403, nil, {...}}`` is 1, so a nil in the middle cuts every
    argument after it; we model the border as "the first missing index".
    """
    out: list[object] = []
    index = 1
    while True:
        value = table.get(index)
        if value is None:
            return tuple(out)
        out.append(value)
        index += 1


def kong_call_args(args: object) -> tuple[object, ...]:
    """The arguments a PDK function receives for a ``{Method, Args}`` request (§5.1).

    * ``Args`` an array: its elements, cut at the first nil (§11.2);
    * ``Args`` a map: ``unpack`` of that table, which for string keys is nothing;
    * ``Args`` not a table: passed as the single argument (nil means no argument).
    """
    if isinstance(args, (list, tuple)):
        return unpack_args({i + 1: v for i, v in enumerate(args)})
    if isinstance(args, Mapping):
        return unpack_args(args)
    if args is None:
        return ()
    return (args,)
