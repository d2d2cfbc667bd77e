"""A table of fake PDK functions: dotted name -> implementation.

Each module of the fake PDK builds its own table, ``FUNCTIONS =
FunctionTable()``, and defines its functions into it with
``@FUNCTIONS.define("kong.x.y")``. Importing a module registers nothing
anywhere else: ``registry`` lists the modules and merges their tables.

An implementation takes the request's ``Exchange`` and the arguments exactly as
the Lua function receives them (after Kong's nil cut, docs/protocol.md §11.2), and
returns what the Lua function returns: a value, or ``LuaMulti`` for several
(only the first reaches a 3.x plugin, §5.3). It raises ``LuaError`` where the
Lua function calls ``error()``; Kong then abandons the event (§5.2.5).

Results are Lua values in Python clothes: the emulator packs them with Kong's
encoder and applies the multimap, bin and JSON-text rewrites (§6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

__all__ = ["Impl", "FunctionTable"]

Impl = Callable[..., object]

F = TypeVar("F", bound=Callable[..., object])


class FunctionTable(Mapping[str, Impl]):
    """One module's fake PDK functions, by dotted name."""

    def __init__(self) -> None:
        self._impls: dict[str, Impl] = {}

    def define(self, *names: str) -> Callable[[F], F]:
        """Put the decorated function in this table under one or more dotted PDK names."""

        def put(fn: F) -> F:
            for name in names:
                self.add(name, fn)
            return fn

        return put

    def add(self, name: str, impl: Impl) -> None:
        if name in self._impls:
            raise RuntimeError(f"{name} is implemented twice")
        self._impls[name] = impl

    def __getitem__(self, name: str) -> Impl:
        return self._impls[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._impls)

    def __len__(self) -> int:
        return len(self._impls)
