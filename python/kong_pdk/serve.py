"""Building a native plugin server for a plugin class.

Shared by the command line (``kong_pdk.cli``) and the test kit, so that a plugin
runs the same way in tests as in Kong.
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from typing import Any

from kong_pdk import _core
from kong_pdk.plugin_info import BOOKKEEPING_KEYS, PHASES, phases_of, plugin_info, schema_field_names

__all__ = ["build_server", "lua_style_of"]


def _annotation_style(plugin: type) -> bool | None:
    """False when a phase handler annotates ``kong`` with a python-style root class.

    Those are ``PythonStyleKong`` and its async twin ``AsyncPythonStyleKong``
    (matched by name, so string annotations count too). The exact names, rather
    than a prefix: a namespace class such as ``PythonStyleRequest`` is not what
    a handler receives, and says nothing about the plugin's style.
    """
    for phase in PHASES:
        method = getattr(plugin, phase, None)
        if method is None:
            continue
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # unresolvable string annotations: fall back to the raw ones
            hints = dict(getattr(method, "__annotations__", {}))
        params = [p for p in inspect.signature(method).parameters if p != "self"]
        if not params:
            continue
        hint = hints.get(params[0])
        name = hint if isinstance(hint, str) else getattr(hint, "__name__", "")
        if name.rsplit(".", 1)[-1] in ("PythonStyleKong", "AsyncPythonStyleKong"):
            return False
    return None


def lua_style_of(plugin: type, default: bool = True) -> bool:
    """The error style a plugin gets.

    In order: a ``lua_style`` class attribute; a handler annotated with
    ``kong.PythonStyleKong`` (python style); else ``default`` (the
    ``--no-lua-style`` flag).
    """
    choice = getattr(plugin, "lua_style", None)
    if choice is not None:
        return bool(choice)
    by_annotation = _annotation_style(plugin)
    return default if by_annotation is None else by_annotation


def async_phases(plugin: type) -> list[str]:
    """The phases whose handler is ``async def``."""
    return [p for p in phases_of(plugin) if inspect.iscoroutinefunction(getattr(plugin, p))]


def build_server(
    name: str,
    plugin: type,
    socket_path: str | os.PathLike[str],
    *,
    version: Any = None,
    priority: Any = 0,
    schema: Any = (),
    lua_style: bool = True,
    gevent: bool = False,
    **options: Any,
) -> _core.PluginServer:
    """A server for ``plugin`` on ``socket_path``; call ``start()`` to serve.

    Phase handlers run on threads; ``async def`` handlers on an asyncio loop;
    with ``gevent=True`` every handler runs in a greenlet on this thread's hub.
    ``options`` are the core's tuning knobs (``event_timeout``, ``instance_ttl``,
    ``max_frame``, ``listen_backlog``, ``max_handler_threads``).
    """
    info = plugin_info(name, plugin, version, priority, schema)
    if not info["Phases"]:
        raise ValueError(f"plugin class {plugin.__name__} defines none of the phases {', '.join(PHASES)}")
    declared = schema_field_names(schema)
    coroutines = async_phases(plugin)
    runner: object = None
    loop_phases: list[str] = []
    if gevent:
        if coroutines:
            raise ValueError(
                f"async def handlers ({', '.join(coroutines)}) cannot run under gevent (-g); "
                "use plain def handlers or drop -g"
            )
        from kong_pdk.runners import GeventRunner

        runner, loop_phases = GeventRunner(), phases_of(plugin)
    elif coroutines:
        from kong_pdk.runners import AsyncioRunner

        runner, loop_phases = AsyncioRunner(), coroutines
    return _core.PluginServer(
        name,
        plugin,
        phases_of(plugin),
        json.dumps(info),
        os.fspath(socket_path),
        lua_style=lua_style_of(plugin, lua_style),
        config_exclude=[k for k in BOOKKEEPING_KEYS if k not in declared],
        runner=runner,
        loop_phases=loop_phases,
        **options,
    )
