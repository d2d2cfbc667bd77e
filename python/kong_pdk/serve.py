"""Building a native plugin server for one plugin class, or for several on one socket.

Shared by the command line (``kong_pdk.cli``: a dedicated server, and
``kong-python-pluginserver -d DIR``) and the test kit, so that a plugin runs the
same way in tests as in Kong.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kong_pdk import _core
from kong_pdk.blocking import blocking_reason
from kong_pdk.plugin_info import BOOKKEEPING_KEYS, PHASES, phases_of, plugin_info, schema_field_names
from kong_pdk.protocol import MSGPACK, PROTOBUF, protocol_of

__all__ = ["build_server", "build_plugins_server", "PluginDefinition", "lua_style_of", "MODELS"]

log = logging.getLogger("kong_pdk")


@dataclass(frozen=True)
class PluginDefinition:
    """One plugin to serve: its name (Kong's), its class and its file's facts."""

    name: str
    cls: type
    version: Any = None
    priority: Any = 0
    schema: Any = ()


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
    ``kong.PythonStyleKong`` or ``kong.AsyncPythonStyleKong`` (python style);
    else ``default`` (the ``--no-lua-style`` flag).
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
    model: str = "auto",
    processes: int | None = None,
    worker_args: Sequence[str] = (),
    protocol: str | None = None,
    **options: Any,
) -> _core.PluginServer:
    """A server for ``plugin`` on ``socket_path``; call ``start()`` to serve.

    Plain ``def`` handlers run on threads, or as greenlets on one loop thread
    (``model``: ``"auto"`` chooses greenlets when the plugin's code is known
    not to block, see ``kong_pdk.blocking``); ``async def`` handlers on an
    asyncio loop; with ``gevent=True`` every handler runs in a greenlet on
    this thread's hub.
    With ``processes=N`` (0: one per CPU) they run in N worker processes, each
    one ``python <the plugin's file> --worker-socket ...`` (so that file must
    call ``start_dedicated_server`` when run), and this process only relays
    events; ``worker_args`` are more flags for the workers (e.g. ``-v``).
    ``options`` are the core's tuning knobs (``event_timeout``, ``instance_ttl``,
    ``max_frame``, ``listen_backlog``, ``max_handler_threads``, ``handler_timeout``).
    """
    return build_plugins_server(
        [PluginDefinition(name, plugin, version, priority, schema)],
        socket_path,
        lua_style=lua_style,
        gevent=gevent,
        model=model,
        processes=processes,
        worker_command=None,
        worker_args=worker_args,
        protocol=protocol,
        **options,
    )


def server_protocol(plugins: Sequence[PluginDefinition], flag: str | None = None) -> str:
    """The one wire of a server's plugins (``--protocol``, else each plugin's ``protocol``).

    Kong speaks each plugin's wire on the server's socket, and a server
    speaks one: plugins that disagree cannot share it.
    """
    chosen = {protocol_of(p.cls, flag) for p in plugins}
    if len(chosen) > 1:
        by = ", ".join(f"{p.name}: {protocol_of(p.cls, flag)}" for p in plugins)
        raise ValueError(f"plugins on one socket must share a protocol ({by}); serve them separately or pass --protocol")
    return chosen.pop() if chosen else MSGPACK


def build_plugins_server(
    plugins: Sequence[PluginDefinition],
    socket_path: str | os.PathLike[str],
    *,
    lua_style: bool = True,
    gevent: bool = False,
    model: str = "auto",
    processes: int | None = None,
    worker_command: Sequence[str] | None = None,
    worker_args: Sequence[str] = (),
    protocol: str | None = None,
    **options: Any,
) -> _core.PluginServer:
    """A server for every plugin of ``plugins`` on one socket, as :func:`build_server`.

    Kong names the plugin in each StartInstance, and an instance's events run
    its plugin's handlers. The execution model is the server's: under
    ``gevent`` no plugin may have ``async def`` handlers; otherwise each
    plugin's ``async def`` phases share one asyncio loop. With ``processes``,
    ``worker_command`` starts a worker that serves the same plugins (flags are
    added to it); by default, the only plugin's file run again.
    """
    if not plugins:
        raise ValueError("no plugin to serve")
    if model not in MODELS:
        raise ValueError(f"unknown execution model {model!r}: one of {', '.join(MODELS)}")
    wire = server_protocol(plugins, protocol)
    if wire == PROTOBUF:
        return _protobuf_server(plugins, socket_path, lua_style, gevent, processes, model, options)
    runner: object = None
    loop_phases: dict[str, list[str]] = {}
    workers: list[tuple[list[str], str]] = []
    if processes is not None:
        if gevent:
            raise ValueError("-m (worker processes) and -g (gevent) cannot be combined")
        if worker_command is None:
            if len(plugins) != 1:
                raise ValueError("worker processes for several plugins need the command that serves them")
            launcher: type | Sequence[str] = plugins[0].cls
        else:
            launcher = worker_command
        if model != "auto":
            worker_args = [*worker_args, "--model", model]
        workers = worker_commands(launcher, os.fspath(socket_path), processes, lua_style, options, worker_args)
    for plugin in plugins:
        coroutines = async_phases(plugin.cls)
        if gevent and coroutines and processes is None:
            raise ValueError(
                f"async def handlers ({', '.join(coroutines)}) of plugin {plugin.name} cannot run under "
                "gevent (-g); use plain def handlers or drop -g"
            )
        if processes is not None:
            continue
        if gevent:
            loop_phases[plugin.name] = phases_of(plugin.cls)
        elif coroutines:
            loop_phases[plugin.name] = coroutines
    core_model = _core_model(plugins, loop_phases, gevent=gevent, processes=processes, model=model)
    if core_model == "greenlets":
        loop_phases = {plugin.name: phases_of(plugin.cls) for plugin in plugins}
        from kong_pdk.runners import GreenletRunner

        runner = GreenletRunner()
    elif core_model == "gevent":
        from kong_pdk.runners import GeventRunner

        runner = GeventRunner()
    elif core_model in ("asyncio", "mixed"):
        from kong_pdk.runners import AsyncioRunner

        runner = AsyncioRunner()
    return _core.PluginServer(
        [_entry(plugin, lua_style, loop_phases.get(plugin.name, [])) for plugin in plugins],
        os.fspath(socket_path),
        model=core_model,
        runner=runner,
        workers=workers,
        **options,
    )


def _protobuf_server(
    plugins: Sequence[PluginDefinition],
    socket_path: str | os.PathLike[str],
    lua_style: bool,
    gevent: bool,
    processes: int | None,
    model: str,
    options: dict[str, Any],
) -> _core.PluginServer:
    """A ProtoBuf:1 server (src/protobuf/).

    The runner's loop owns the socket (a loop model) with ``gevent``, when
    every phase of every plugin is ``async def``, or when the plain ``def``
    handlers run as greenlets (``model``, as on MessagePack:1); otherwise each
    event runs on its connection's thread, an ``async def`` phase on that
    connection's own asyncio loop (the core's ``threads`` model: on this wire
    a plugin that mixes both needs no bridge).
    """
    if processes is not None:
        raise ValueError(
            "--protocol protobuf is served by the thread model, greenlets, asyncio (every phase async def) or -g; "
            "-m (worker processes) speaks msgpack only"
        )
    runner: object = None
    if gevent:
        for plugin in plugins:
            coroutines = async_phases(plugin.cls)
            if coroutines:
                raise ValueError(
                    f"async def handlers ({', '.join(coroutines)}) of plugin {plugin.name} cannot run under "
                    "gevent (-g); use plain def handlers or drop -g"
                )
        from kong_pdk.runners import GeventRunner

        core_model = "gevent"
        runner = GeventRunner()
    elif all(phases_of(p.cls) == async_phases(p.cls) for p in plugins):
        from kong_pdk.runners import AsyncioRunner

        core_model = "asyncio"
        runner = AsyncioRunner()
    elif not any(async_phases(p.cls) for p in plugins) and _on_greenlets(plugins, model):
        from kong_pdk.runners import GreenletRunner

        core_model = "greenlets"
        runner = GreenletRunner()
    else:
        core_model = "threads"
    looped = runner is not None
    return _core.PluginServer(
        [_entry(plugin, lua_style, phases_of(plugin.cls) if looped else []) for plugin in plugins],
        os.fspath(socket_path),
        model=core_model,
        protocol=PROTOBUF,
        runner=runner,
        **options,
    )


def _core_model(
    plugins: Sequence[PluginDefinition],
    loop_phases: dict[str, list[str]],
    *,
    gevent: bool,
    processes: int | None,
    model: str,
) -> str:
    """The core's execution model (src/models/mod.rs), chosen once: ``processes``
    (``-m``), ``gevent`` (``-g``), ``asyncio`` (every phase of every plugin
    ``async def``), ``mixed`` (some), else ``greenlets`` or ``threads`` for the
    plain ``def`` handlers (``model``, see ``_on_greenlets``)."""
    if processes is not None:
        return "processes"
    if gevent:
        return "gevent"
    if loop_phases:
        every = all(set(loop_phases.get(p.name, [])) == set(phases_of(p.cls)) for p in plugins)
        return "asyncio" if every else "mixed"
    return "greenlets" if _on_greenlets(plugins, model) else "threads"


#: How plain ``def`` handlers run (``--model``): ``threads``, ``greenlets``
#: on one loop thread, or ``auto``: greenlets for plugins known not to block.
MODELS = ("auto", "threads", "greenlets")


def _on_greenlets(plugins: Sequence[PluginDefinition], model: str) -> bool:
    """Whether the plain ``def`` handlers of ``plugins`` run as greenlets on one
    loop thread (``runners.GreenletRunner``) rather than on threads: asked for,
    or ``auto`` and no plugin's code may block (``kong_pdk.blocking``)."""
    if model == "threads":
        return False
    if model == "auto":
        for plugin in plugins:
            reason = blocking_reason(plugin.cls)
            if reason is not None:
                log.info("plugin %s: handlers run on threads, as its code may block: %s", plugin.name, reason)
                return False
    try:
        import greenlet  # noqa: F401
    except ImportError as e:
        if model == "greenlets":
            raise ValueError(f"--model greenlets needs the greenlet package: {e}") from None
        log.warning("handlers run on threads: the greenlet package does not import (%s)", e)
        return False
    if model == "auto":
        names = ", ".join(plugin.name for plugin in plugins)
        log.info("plugin %s: handlers run as greenlets on one loop thread (its code does not block)", names)
    return True


def _entry(plugin: PluginDefinition, lua_style: bool, loop_phases: list[str]) -> _core.PluginEntry:
    """The core's description of one plugin; ValueError when it has no phase."""
    info = plugin_info(plugin.name, plugin.cls, plugin.version, plugin.priority, plugin.schema)
    if not info["Phases"]:
        raise ValueError(
            f"plugin {plugin.name}: class {plugin.cls.__name__} defines none of the phases {', '.join(PHASES)}"
        )
    declared = schema_field_names(plugin.schema)
    return _core.PluginEntry(
        plugin.name,
        plugin.cls,
        phases_of(plugin.cls),
        json.dumps(info),
        lua_style=lua_style_of(plugin.cls, lua_style),
        config_exclude=[k for k in BOOKKEEPING_KEYS if k not in declared],
        loop_phases=loop_phases,
    )


def worker_timeout(event_timeout: float) -> float:
    """A worker's own event deadline: a little after the core's.

    The core's reaper decides when Kong abandoned an event (docs/protocol.md
    §5.2.5) and then ends the worker's side itself; the worker's deadline is
    only the safety net, so it must not fire first.
    """
    return event_timeout * 1.25 + 1.0


def worker_socket_path(socket_path: str, index: int) -> str:
    """A worker's private socket, next to Kong's: ``.<name>.w<i>``.

    Falls back to the temporary directory when that path would not fit in a
    Unix socket address (107 bytes), with the ``.<pid>.tmp`` the core binds
    under first (src/server/socket_file.rs, ``bind``).
    """
    folder, base = os.path.split(socket_path)
    path = os.path.join(folder, f".{base}.w{index}")
    if len(os.fsencode(path)) <= 94:
        return path
    digest = hashlib.sha256(os.fsencode(os.path.abspath(socket_path))).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"kong_pdk-{os.getuid()}-{digest}.w{index}")


def worker_commands(
    launcher: type | Sequence[str],
    socket_path: str,
    processes: int,
    lua_style: bool,
    options: dict[str, Any],
    extra: Sequence[str],
) -> list[tuple[list[str], str]]:
    """Command line and socket of each worker: ``launcher`` with the worker's flags.

    ``launcher`` is a plugin class (its file is run again) or the command that
    serves the same plugins (``kong-python-pluginserver -d DIR``'s).
    """
    count = processes or os.cpu_count() or 1
    if count < 1:
        raise ValueError(f"-m needs at least one worker process, not {processes}")
    if isinstance(launcher, type):
        try:
            base = [sys.executable, os.path.abspath(inspect.getfile(launcher))]
        except TypeError as e:
            raise ValueError(f"worker processes need the file that defines {launcher.__name__}: {e}") from None
    else:
        base = list(launcher)
    prefix = os.path.dirname(socket_path) or "."
    flags = [
        "--event-timeout",
        repr(worker_timeout(float(options.get("event_timeout", _core.DEFAULTS["event_timeout"])))),
        "--instance-ttl",
        repr(float(options.get("instance_ttl", _core.DEFAULTS["instance_ttl"]))),
    ]
    if "max_frame" in options:
        flags += ["--max-message-size", str(options["max_frame"])]
    if "max_handler_threads" in options:
        flags += ["--max-handler-threads", str(options["max_handler_threads"])]
    if options.get("handler_timeout"):
        flags += ["--handler-timeout", repr(float(options["handler_timeout"]))]
    if not lua_style:
        flags.append("--no-lua-style")
    commands = []
    for i in range(count):
        sock = worker_socket_path(socket_path, i)
        argv = [*base, "-p", prefix, "--worker-socket", sock, "--worker-index", str(i)]
        commands.append((argv + flags + list(extra), sock))
    return commands
