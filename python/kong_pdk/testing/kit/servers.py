"""Our real server, in-process, one per plugin: what the kit drives over a socket.

Each plugin under test gets a ``kong_pdk.serve.build_server`` server on a Unix
socket in a private temporary directory, started once and reused for every test
of that plugin in the process (starting is cheap, but reuse keeps hundreds of
tests per second). ``KongEmulator``s talk to it, one per subsystem and Kong
version asked for (``World.kong_version``): the http and stream subsystems are
separate Lua VMs in Kong with their own instances (docs/protocol.md §5.4), and two
Kong versions are two Kongs.

The plugin class is served through a subclass whose phase methods record an
exception before re-raising it, so the server behaves exactly the same (it logs
and answers "ret", §5.2.4) while the kit can fail the test with the traceback.
An ``async def`` phase stays ``async def`` in that subclass, so the server runs
it on its asyncio loop as in production.

The execution model is chosen as the command line chooses it (``build_server``):
``"auto"`` (no flag: greenlets on one loop thread for a plugin whose code is
known not to block, threads otherwise; ``async def`` phases on the asyncio
loop), ``"threads"`` or ``"greenlets"`` (``--model``), ``"gevent"``
(``-g``: every handler in a greenlet, on a hub in a thread of its own, see
``gevent_host``) or ``"processes"`` (``-m N``: the plugin file is run again as
N worker processes, which must therefore end with ``start_dedicated_server``).
A handler that raises in a worker process is not seen by the kit as a
traceback, only as what Kong sees: a ``kong.log.err`` line and a 500.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import inspect
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from kong_pdk import _core
from kong_pdk.blocking import blocking_reason
from kong_pdk.exception import EventAbandoned, PluginExit
from kong_pdk.plugin_info import phases_of
from kong_pdk.protocol import MSGPACK, dump_name, protocol_of
from kong_pdk.serve import build_server, lua_style_of
from kong_pdk.testing.kit.loader import PluginSpec
from kong_pdk.testing.kong.emulator import KongEmulator
from kong_pdk.testing.kong.versions import LATEST, KongVersion

__all__ = ["PluginError", "Served", "served", "shutdown_all", "Model", "MODELS"]

#: How handlers run: as with no flag, ``-g`` or ``-m`` on the command line.
Model = Literal["auto", "threads", "greenlets", "gevent", "processes"]
MODELS: tuple[str, ...] = get_args(Model)

# Seconds an abandoned event waits before the server reclaims it. Kong never
# sends the next step after a Lua error (§5.2.5); tests should not keep
# handler threads around for Kong's 60 s.
EVENT_TIMEOUT = 5.0


@dataclass(frozen=True)
class PluginError:
    """An exception a phase handler raised (the server logged it and answered "ret")."""

    phase: str
    exception: BaseException
    traceback: str

    def __str__(self) -> str:
        return f"the {self.phase} handler raised:\n{self.traceback}"


@dataclass
class Served:
    spec: PluginSpec
    server: Any
    directory: str
    socket_path: str
    errors: list[PluginError] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Callable[[float], object] | None = None
    emulators: dict[tuple[str, KongVersion], KongEmulator] = field(default_factory=dict)
    #: The wire the server speaks and its emulators with it: the plugin's
    #: ``protocol`` (docs/protobuf.md), MsgPack:1 by default.
    protocol: str = MSGPACK

    def emulator(self, subsystem: str = "http", kong_version: KongVersion = LATEST) -> KongEmulator:
        """The Kong worker (one per subsystem and version) that plays this plugin's requests."""
        with self.lock:
            key = (subsystem, kong_version)
            emu = self.emulators.get(key)
            if emu is None:
                emu = self.emulators[key] = KongEmulator(
                    self.socket_path,
                    kong_version=kong_version,
                    protocol=dump_name(self.protocol),
                    protobuf_schema=_core.PROTOBUF_SCHEMA,
                )
            return emu

    @property
    def http(self) -> KongEmulator:
        return self.emulator("http")

    @property
    def stream(self) -> KongEmulator:
        return self.emulator("stream")

    def take_errors(self) -> list[PluginError]:
        with self.lock:
            out, self.errors[:] = list(self.errors), []
            return out

    def close(self) -> None:
        with self.lock:
            emulators = list(self.emulators.values())
        for emu in emulators:
            emu.close()
        try:
            (self.stop or self.server.shutdown)(1.0)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _recording(cls: type, sink: Callable[[PluginError], None]) -> type:
    namespace: dict[str, Any] = {"lua_style": lua_style_of(cls), "__module__": cls.__module__}

    def wrap(phase: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(handler):
            return wrap_async(phase, handler)

        @functools.wraps(handler)
        def run(self: Any, kong: Any) -> Any:
            try:
                return handler(self, kong)
            except (PluginExit, EventAbandoned):
                raise
            except BaseException as exc:
                sink(PluginError(phase, exc, traceback.format_exc()))
                raise

        run.__annotations__ = {}  # the style is fixed by lua_style above
        return run

    def wrap_async(phase: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def run(self: Any, kong: Any) -> Any:
            try:
                return await handler(self, kong)
            except (PluginExit, EventAbandoned):
                raise
            except BaseException as exc:
                sink(PluginError(phase, exc, traceback.format_exc()))
                raise

        run.__annotations__ = {}
        return run

    for phase in phases_of(cls):
        namespace[phase] = wrap(phase, getattr(cls, phase))
    return type(cls.__name__, (cls,), namespace)


_lock = threading.Lock()
_servers: dict[tuple[int, str, str, int, str, int], Served] = {}


def served(spec: PluginSpec, model: Model = "auto", workers: int = 1) -> Served:
    """The server of ``spec`` under ``model`` (started on first use, then reused)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    if model == "processes" and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if model == "processes" and spec.path is None:
        raise ValueError(
            "model='processes' runs the plugin file again in each worker: give the file "
            "(kong.plugin('my-plugin.py')), which must end with start_dedicated_server(...)"
        )
    key = (id(spec.cls), spec.name, spec.version, spec.priority, model, workers if model == "processes" else 0)
    with _lock:
        have = _servers.get(key)
        if have is not None:
            return have
        directory = tempfile.mkdtemp(prefix="kpk", dir="/tmp")
        socket_path = f"{directory}/{spec.name}.socket"
        errors: list[PluginError] = []
        # Worker processes import the plugin file themselves: the recording
        # subclass would not reach them.
        cls = spec.cls if model == "processes" else _recording(spec.cls, errors.append)
        wire = protocol_of(spec.cls)
        # The recording subclass lives in this module: the choice of `auto`
        # is made on the plugin's own class, as the command line makes it.
        plain = model if model in ("threads", "greenlets") else "threads"
        if model == "auto":
            pure = blocking_reason(spec.cls) is None and importlib.util.find_spec("greenlet") is not None
            plain = "greenlets" if pure else "threads"

        def build() -> Any:
            return build_server(
                spec.name,
                cls,
                socket_path,
                version=spec.version,
                priority=spec.priority,
                schema=spec.schema,
                event_timeout=EVENT_TIMEOUT,
                gevent=model == "gevent",
                model=plain,
                processes=workers if model == "processes" else None,
                protocol=wire,
            )

        stop: Callable[[float], object] | None = None
        if model == "gevent":
            from kong_pdk.testing.kit.gevent_host import GeventHost

            host = GeventHost(build)
            server, stop = host.server, host.stop
        else:
            server = build()
            server.start()
        entry = Served(
            spec=spec,
            server=server,
            directory=directory,
            socket_path=socket_path,
            errors=errors,
            stop=stop,
            protocol=wire,
        )
        _servers[key] = entry
        return entry


@atexit.register
def shutdown_all() -> None:
    """Stop every server the kit started (also run at exit)."""
    with _lock:
        entries = list(_servers.values())
        _servers.clear()
    for entry in entries:
        entry.close()
