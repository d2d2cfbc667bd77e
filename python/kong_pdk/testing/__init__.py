"""Test tools for plugin servers: a wire-level Kong emulator.

``KongEmulator`` plays Kong over the server's Unix socket, following
docs/protocol.md to the letter: Kong's MessagePack encoding (``luapack``), its
reader, its connection pool, the StartInstance/HandleEvent/Step loop and its instance
cache. Replies are decoded with the stock ``msgpack`` package (``pip install
'kong_pdk[testing]'``), so a server is never checked by our own decoder.

The emulator does not import ``kong_pdk._core``: it talks to a server over a socket only.
The plugin test kit built on it (``PluginRunner``, ``load_plugin``, ``Request``,
``Response``, ``World``; see docs/testing.md) serves plugins in-process, so it is
imported on first use of those names.

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
    "PluginRunner",
    "load_plugin",
    "Request",
    "Response",
    "World",
    "KitFailure",
    "ConfigError",
]

# The kit needs the native core; load it only when asked for (PEP 562).
_KIT = {
    "PluginRunner": "kong_pdk.testing.kit",
    "load_plugin": "kong_pdk.testing.loader",
    "Request": "kong_pdk.testing.http",
    "Response": "kong_pdk.testing.http",
    "World": "kong_pdk.testing.world",
    "KitFailure": "kong_pdk.testing.result",
    "ConfigError": "kong_pdk.testing.schema",
}


def __getattr__(name: str) -> object:
    module = _KIT.get(name)
    if module is None:
        raise AttributeError(f"module 'kong_pdk.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
