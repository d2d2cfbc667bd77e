"""What can go wrong when the emulator plays Kong, as exception types.

Kong distinguishes three kinds of failure (docs/protocol.md §7.1, §11.6), and so do we:

* the server answered with an RPC error string (``RpcError``): Kong logs it and, if it
  contains "no plugin instance", restarts the instance and retries the phase;
* the connection failed (``TransportError``, a kind of ``RpcError`` because Kong hands the
  socket's error text to the same code path as an RPC error string);
* the server broke an ``assert`` or sent something Lua cannot index (``KongProtocolError``):
  in Kong that is a Lua error, so the request gets a 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kong_pdk.testing.kong.event_result import EventResult

__all__ = ["KongProtocolError", "RpcError", "TransportError", "LuaError"]


class KongProtocolError(AssertionError):
    """The server did something that trips an ``assert`` or a Lua error in Kong.

    Examples: a reply whose type is not 1 or whose msgid differs (docs/protocol.md §3.1,
    §11.6), an error element that is not a string (§3.1: Kong calls ``:lower()`` on
    it), bytes that are not MessagePack, a ``Data`` that is neither ``"ret"`` nor a
    ``{Method, Args}`` table (§5.1).

    It derives from ``AssertionError`` so that pytest reports it as a failed check.
    ``partial`` is set when the violation interrupted an event.
    """

    partial: EventResult | None = None


class RpcError(Exception):
    """The server answered a call with an error string (docs/protocol.md §3.1, §7.1).

    ``message`` is the string exactly as received. ``partial`` is set when the error
    interrupted an event: it holds what the event did up to that point.
    """

    def __init__(self, message: str, *, method: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.partial: EventResult | None = None

    @property
    def is_no_plugin_instance(self) -> bool:
        """Kong lower-cases the error and looks for this substring (§7.1)."""
        return "no plugin instance" in self.message.lower()


class TransportError(RpcError):
    """Connecting, writing or reading failed (docs/protocol.md §7.1 "connection or read failure").

    Kong turns such failures into an error string (``closed``, ``timeout``, ``no data``
    …) and treats it like an RPC error, so this is a subclass of ``RpcError``.
    """


class LuaError(Exception):
    """Raise this from an answer callable to make the PDK function fail with a Lua error.

    Kong then abandons the event: no further Step is ever sent for it (docs/protocol.md
    §5.2.5). The emulator records the event's outcome as ``"lua_error"``.
    """
