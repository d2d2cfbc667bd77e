"""Test tools for plugin servers: a wire-level Kong emulator.

``KongEmulator`` plays Kong over the server's Unix socket, following
docs/protocol.md to the letter: Kong's MessagePack encoding (``luapack``), its
reader, its connection pool, the StartInstance/HandleEvent/Step loop and its instance
cache. Replies are decoded with the stock ``msgpack`` package (``pip install
'kong-pdk-native[testing]'``), so a server is never checked by our own decoder.

The emulator does not import ``kong_pdk._core``: it talks to a server over a socket only.
The plugin test kit built on it (``PluginRunner``, ``load_plugin``, ``Request``,
``Response``, ``World``; see docs/testing.md) serves plugins in-process. Every
name is imported on first use.

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

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kong_pdk.testing.answers import Answer, AnswerTable
    from kong_pdk.testing.connection import KongConnection
    from kong_pdk.testing.emulator import KongEmulator
    from kong_pdk.testing.errors import KongProtocolError, LuaError, RpcError, TransportError
    from kong_pdk.testing.http import Request, Response
    from kong_pdk.testing.kit import PluginRunner
    from kong_pdk.testing.loader import load_plugin
    from kong_pdk.testing.lua import NULL, LuaMulti
    from kong_pdk.testing.luapack import AsMap, Bin, pack
    from kong_pdk.testing.result import KitFailure
    from kong_pdk.testing.results import EventResult, Outcome, PdkCall, TerminalCall
    from kong_pdk.testing.schema import ConfigError
    from kong_pdk.testing.wire import Notification, Reply
    from kong_pdk.testing.world import World

# Every name is loaded on first use (PEP 562): importing a submodule such as
# ``kong_pdk.testing.pytest_plugin`` (which pytest does in every session, as an
# entry point) must not need msgpack, nor the native core.
_WHERE = {
    "KongEmulator": "emulator",
    "KongConnection": "connection",
    "EventResult": "results",
    "PdkCall": "results",
    "TerminalCall": "results",
    "Outcome": "results",
    "Reply": "wire",
    "Notification": "wire",
    "RpcError": "errors",
    "TransportError": "errors",
    "KongProtocolError": "errors",
    "LuaError": "errors",
    "NULL": "lua",
    "LuaMulti": "lua",
    "Bin": "luapack",
    "AsMap": "luapack",
    "Answer": "answers",
    "AnswerTable": "answers",
    "pack": "luapack",
    "PluginRunner": "kit",
    "load_plugin": "loader",
    "Request": "http",
    "Response": "http",
    "World": "world",
    "KitFailure": "result",
    "ConfigError": "schema",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kong_pdk.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kong_pdk.testing.{module}"), name)
