"""What one event did, as seen from Kong's side (docs/protocol.md §5.1).

``PdkCall`` is one ``{Method, Args}`` request of the server and what Kong answered;
``EventResult`` is the whole event: its calls, how it ended and how long it took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["PdkCall", "TerminalCall", "EventResult", "Outcome"]

# "ret": the server answered "ret" (or a nil result, §11.6); "exit"/"error": a terminal
# kong.response call ended the event (§5.2.3); "lua_error": an answer raised LuaError
# and Kong abandoned the event (§5.2.5).
Outcome = Literal["ret", "exit", "error", "lua_error"]


@dataclass(frozen=True)
class PdkCall:
    """One PDK call the server asked Kong to make, and Kong's answer."""

    method: str
    # The arguments as the Lua function received them: after Kong's Args handling and
    # the cut at the first nil (§5.1, §11.2).
    args: tuple[object, ...]
    # ``Args`` exactly as decoded from the server's reply (None when absent).
    raw_args: object
    # False when Kong could not resolve the method ("could not find pdk method", §5.1).
    found: bool
    # Where the answer came from: "table", "default" (nil) or "unknown".
    source: str
    # The Lua return values the answer stood for.
    returns: tuple[object, ...]
    # The Step* method Kong sent, None for a terminal call or a Lua error.
    step_method: str | None = None
    # Whether the Step carried a ``Data`` key, and its value as the server decodes it.
    has_data: bool = False
    data: object = None
    # Seconds spent in the RPC that carried the answer.
    rpc_seconds: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.method in ("kong.response.exit", "kong.response.error")


@dataclass(frozen=True)
class TerminalCall:
    """A ``kong.response.exit`` / ``kong.response.error``: status, body (or message), headers."""

    method: str
    status: object
    body: object
    headers: object


@dataclass
class EventResult:
    instance_id: int
    phase: str
    event_id: object = None
    calls: list[PdkCall] = field(default_factory=list)
    outcome: Outcome = "ret"
    terminal: TerminalCall | None = None
    lua_error: str | None = None
    # True when the event ended on a reply whose result was nil (§11.6).
    nil_reply: bool = False
    # Kong's log lines for this event, e.g. "could not find pdk method: x".
    log: list[str] = field(default_factory=list)
    # Seconds per RPC (HandleEvent first, then each Step*), and for the whole event.
    rpc_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def methods(self) -> list[str]:
        return [call.method for call in self.calls]

    @property
    def unknown_methods(self) -> list[str]:
        return [call.method for call in self.calls if not call.found]

    def calls_to(self, method: str) -> list[PdkCall]:
        return [call for call in self.calls if call.method == method]

    @property
    def status(self) -> object:
        return self.terminal.status if self.terminal else None

    @property
    def body(self) -> object:
        return self.terminal.body if self.terminal else None

    @property
    def headers(self) -> object:
        return self.terminal.headers if self.terminal else None
