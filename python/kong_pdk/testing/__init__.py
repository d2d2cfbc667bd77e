"""Test tools for plugin servers: a wire-level Kong emulator.

``KongEmulator`` plays Kong over the server's Unix socket, following
reference/protocol.md to the letter: Kong's MessagePack encoding (``luapack``), its
reader, its connection pool, the StartInstance/HandleEvent/Step loop and its instance
cache. Replies are decoded with the stock ``msgpack`` package (``pip install
'kong_pdk[testing]'``), so a server is never checked by our own decoder.

This package does not import ``kong_pdk._core``: it talks to a server over a socket only.

Example::

    from kong_pdk.testing import KongEmulator

    with KongEmulator("/tmp/prefix/py-hello.socket",
                      answers={"kong.request.get_header": "example.com"}) as kong:
        result = kong.run_phase("py-hello", {"message": "hi"}, "access")
        assert result.outcome == "ret"
        assert result.calls_to("kong.response.set_header")[0].args == (
            "x-hello-from-python", "Python says hi to example.com")
"""

from __future__ import annotations

from kong_pdk.testing.answers import Answer, AnswerTable
from kong_pdk.testing.connection import KongConnection
from kong_pdk.testing.emulator import KongEmulator
from kong_pdk.testing.errors import KongProtocolError, LuaError, RpcError, TransportError
from kong_pdk.testing.lua import NULL, LuaMulti
from kong_pdk.testing.luapack import AsMap, Bin, pack
from kong_pdk.testing.results import EventResult, Outcome, PdkCall, TerminalCall
from kong_pdk.testing.wire import Notification, Reply

__all__ = [
    "KongEmulator",
    "KongConnection",
    "EventResult",
    "PdkCall",
    "TerminalCall",
    "Outcome",
    "Reply",
    "Notification",
    "RpcError",
    "TransportError",
    "KongProtocolError",
    "LuaError",
    "NULL",
    "LuaMulti",
    "Bin",
    "AsMap",
    "Answer",
    "AnswerTable",
    "pack",
]
