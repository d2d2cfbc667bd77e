"""Kong's side of the wire: a Kong worker played over a plugin server's Unix socket.

``KongEmulator`` follows docs/protocol.md to the letter: Kong's MessagePack
encoding (``luapack``), its reader (``wire``), its connection pool (``pool``,
``connection``, ``rpc``), the StartInstance/HandleEvent/Step loop
(``event_loop``, ``steps``, ``answers``) and its instance cache
(``instances``), for the Kong version it is given (``versions``). Replies are
decoded with the stock ``msgpack`` package, so a server is never checked by
our own decoder.

This package talks to a server over a socket only: it imports nothing of
``kong_pdk`` outside itself, not even the native core
(``tests/emulator/test_package_boundaries.py`` checks that).
"""

from __future__ import annotations

from kong_pdk.testing.kong.answers import Answer, AnswerTable
from kong_pdk.testing.kong.connection import KongConnection
from kong_pdk.testing.kong.emulator import KongEmulator
from kong_pdk.testing.kong.errors import KongProtocolError, LuaError, RpcError, TransportError
from kong_pdk.testing.kong.event_result import EventResult, Outcome, PdkCall, TerminalCall
from kong_pdk.testing.kong.lua import NULL, LuaMulti
from kong_pdk.testing.kong.luapack import AsMap, Bin, pack
from kong_pdk.testing.kong.wire import Notification, Reply

__all__ = [
    "Answer",
    "AnswerTable",
    "AsMap",
    "Bin",
    "EventResult",
    "KongConnection",
    "KongEmulator",
    "KongProtocolError",
    "LuaError",
    "LuaMulti",
    "NULL",
    "Notification",
    "Outcome",
    "PdkCall",
    "Reply",
    "RpcError",
    "TerminalCall",
    "TransportError",
    "pack",
]
