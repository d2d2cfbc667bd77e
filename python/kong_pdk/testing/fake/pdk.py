"""The fake Kong PDK: answer tables for the wire emulator, backed by an ``Exchange``.

For each phase the kit asks ``FakePdk.answers()`` for a table of callables, one per
PDK function Kong has (``phase_rules.exists``), and hands it to
``KongEmulator.run_phase``. Each callable:

1. checks the phase (``phase_rules.phase_problem``): Kong raises a Lua error
   there, so the call fails as a ``LuaError`` and Kong abandons the event
   (docs/protocol.md §5.2.5); the kit also notes it as a violation;
2. runs the implementation from ``registry.IMPLS`` on the exchange.

A ``LuaError`` raised by an implementation (a bad argument) is noted the same way.
Names outside the table fall through to the emulator, which answers nil like
Kong does for a method it cannot find; the kit notes those after the event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.phase_rules import exists, phase_problem
from kong_pdk.testing.fake.registry import IMPLS
from kong_pdk.testing.kong.errors import LuaError

__all__ = ["FakePdk", "Violation"]


@dataclass(frozen=True)
class Violation:
    """A PDK call Kong would refuse: where, what, and Kong's reason."""

    phase: str
    method: str
    reason: str

    def __str__(self) -> str:
        return f"{self.phase}: {self.reason}"


class FakePdk:
    def __init__(self, exchange: Exchange, overrides: dict[str, object] | None = None) -> None:
        self.exchange: Exchange = exchange
        self.violations: list[Violation] = []
        self.overrides: dict[str, object] = dict(overrides or {})
        self._table: dict[str, object] | None = None

    def note(self, method: str, reason: str) -> None:
        self.violations.append(Violation(self.exchange.phase, method, reason))

    def answers(self) -> dict[str, object]:
        if self._table is None:
            world = self.exchange.world
            table: dict[str, object] = {}
            for name, impl in IMPLS.items():
                if exists(name, world.kong_version, world.enterprise):
                    table[name] = self._bind(name, impl)
            for name, answer in self.overrides.items():
                table[name] = self._bind_override(name, answer)
            self._table = table
        return self._table

    def _check(self, name: str) -> None:
        problem = phase_problem(name, self.exchange.phase)
        if problem is not None:
            self.note(name, problem)
            raise LuaError(problem)

    def _bind(self, name: str, impl: Callable[..., object]) -> Callable[..., object]:
        def answer(*args: object) -> object:
            self._check(name)
            try:
                return impl(self.exchange, *args)
            except LuaError as exc:
                self.note(name, f"{name}: {exc}")
                raise

        return answer

    def _bind_override(self, name: str, value: object) -> Callable[..., object]:
        def answer(*args: object) -> object:
            self._check(name)
            return value(*args) if callable(value) else value

        return answer
