"""Our real server, in-process, one per plugin: what the kit drives over a socket.

Each plugin under test gets a ``kong_pdk.serve.build_server`` server on a Unix
socket in a private temporary directory, started once and reused for every test
of that plugin in the process (starting is cheap, but reuse keeps hundreds of
tests per second). Two ``KongEmulator``s talk to it: one plays the http
subsystem and one the stream subsystem, which are separate Lua VMs in Kong
with their own instances (docs/protocol.md §5.4).

The plugin class is served through a subclass whose phase methods record an
exception before re-raising it, so the server behaves exactly the same (it logs
and answers "ret", §5.2.4) while the kit can fail the test with the traceback.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kong_pdk.exception import EventAbandoned, PluginExit
from kong_pdk.plugin_info import phases_of
from kong_pdk.serve import build_server, lua_style_of
from kong_pdk.testing.emulator import KongEmulator
from kong_pdk.testing.loader import PluginSpec

__all__ = ["PluginError", "Served", "served", "shutdown_all"]

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
    http: KongEmulator
    stream: KongEmulator
    errors: list[PluginError] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_errors(self) -> list[PluginError]:
        with self.lock:
            out, self.errors[:] = list(self.errors), []
            return out

    def close(self) -> None:
        self.http.close()
        self.stream.close()
        try:
            self.server.shutdown(1.0)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _recording(cls: type, sink: Callable[[PluginError], None]) -> type:
    namespace: dict[str, Any] = {"lua_style": lua_style_of(cls), "__module__": cls.__module__}

    def wrap(phase: str, handler: Callable[..., Any]) -> Callable[..., Any]:
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

    for phase in phases_of(cls):
        namespace[phase] = wrap(phase, getattr(cls, phase))
    return type(cls.__name__, (cls,), namespace)


_lock = threading.Lock()
_servers: dict[tuple[int, str, str, int], Served] = {}


def served(spec: PluginSpec) -> Served:
    key = (id(spec.cls), spec.name, spec.version, spec.priority)
    with _lock:
        have = _servers.get(key)
        if have is not None:
            return have
        directory = tempfile.mkdtemp(prefix="kpk", dir="/tmp")
        socket_path = f"{directory}/{spec.name}.socket"
        errors: list[PluginError] = []
        cls = _recording(spec.cls, errors.append)
        server = build_server(
            spec.name,
            cls,
            socket_path,
            version=spec.version,
            priority=spec.priority,
            schema=spec.schema,
            event_timeout=EVENT_TIMEOUT,
        )
        server.start()
        entry = Served(
            spec=spec,
            server=server,
            directory=directory,
            http=KongEmulator(socket_path),
            stream=KongEmulator(socket_path),
            errors=errors,
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
