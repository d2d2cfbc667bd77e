"""Test tools for plugin servers: a wire-level Kong emulator and a plugin test kit.

The sub-packages, each importing only from those before it:

* ``kong``: Kong's side of the wire. ``KongEmulator`` plays a Kong worker over
  the server's Unix socket, following docs/protocol.md to the letter. It
  talks to a server over a socket only, and never imports the native core;
* ``http``: the HTTP model (``Request``, ``Response``, headers, arguments, bodies);
* ``fake``: the fake Kong PDK that answers the emulator's PDK calls from one
  request's state, inside a ``World``;
* ``kit``: the plugin test kit (``PluginRunner``, ``load_plugin``; see
  docs/testing.md), which serves plugins in-process with the native core.

At this level only entry points that must import without the testing extra:
this module (its names load on first use), ``pytest_plugin`` (pytest's entry
point, imported in every session) and ``run`` (``kong-pdk run``). The
documented module paths ``kong_pdk.testing.schema``, ``.loader`` and
``.world`` still work. ``tests/emulator/test_package_boundaries.py`` checks
all of this by reading the imports.

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
    from kong_pdk.testing.fake import World
    from kong_pdk.testing.http import Request, Response
    from kong_pdk.testing.kit import ConfigError, KitFailure, PluginRunner, load_plugin
    from kong_pdk.testing.kong import (
        NULL,
        Answer,
        AnswerTable,
        AsMap,
        Bin,
        EventResult,
        KongConnection,
        KongEmulator,
        KongProtocolError,
        LuaError,
        LuaMulti,
        Notification,
        Outcome,
        PdkCall,
        Reply,
        RpcError,
        TerminalCall,
        TransportError,
        pack,
    )

__all__ = [
    # kong_pdk.testing.kong
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
    # kong_pdk.testing.http
    "Request",
    "Response",
    # kong_pdk.testing.fake
    "World",
    # kong_pdk.testing.kit
    "PluginRunner",
    "load_plugin",
    "KitFailure",
    "ConfigError",
]

# In layer order: a name of the emulator never loads the kit (nor the native core).
_SUBPACKAGES = ("kong", "http", "fake", "kit")


def __getattr__(name: str) -> object:
    # Loaded on first use (PEP 562): importing ``kong_pdk.testing.pytest_plugin``,
    # which pytest does in every session, must need neither msgpack nor the core.
    if name in __all__:
        for sub in _SUBPACKAGES:
            package = importlib.import_module(f"kong_pdk.testing.{sub}")
            if name in package.__all__:
                return getattr(package, name)
    raise AttributeError(f"module 'kong_pdk.testing' has no attribute {name!r}")
