"""The native core (Rust). Use it through ``kong_pdk.cli`` and ``kong_pdk.serve``."""

from os import PathLike
from typing import Any, Final, final

from typing_extensions import Self

__all__ = [
    "DEFAULTS",
    "PROTOBUF_SCHEMA",
    "PdkProxy",
    "PluginEntry",
    "PluginServer",
    "__version__",
    "init_logging",
    "stack_chunks_cached",
]

__version__: Final[str]
# The default of every server setting, keyed by PluginServer parameter (src/defaults.rs).
DEFAULTS: Final[dict[str, float]]
# ProtoBuf:1's schema compiled by the core's build: a serialized FileDescriptorSet of
# src/protobuf/pluginsocket.proto and its imports (the test kit's Kong reads it).
PROTOBUF_SCHEMA: Final[bytes]

@final
class PluginEntry:
    """One plugin of a server: its class, phases, info JSON and how it runs (``src/plugin_entry.rs``)."""

    def __new__(
        cls,
        name: str,
        plugin_class: type,
        phases: list[str],
        info_json: str,
        *,
        lua_style: bool = True,
        config_exclude: list[str] = ...,
        loop_phases: list[str] = ...,
    ) -> Self: ...
    @property
    def name(self) -> str: ...

@final
class PluginServer:
    """The plugins of ``plugins`` served on one Unix socket (see ``src/server/mod.rs``)."""

    def __new__(
        cls,
        plugins: list[PluginEntry],
        socket_path: str | PathLike[str],
        *,
        model: str = ...,
        # Defaults: DEFAULTS above (the core's src/defaults.rs).
        event_timeout: float = ...,
        instance_ttl: float = ...,
        max_frame: int = ...,
        listen_backlog: int = ...,
        async_threads: int = ...,
        max_handler_threads: int = ...,
        handler_timeout: float = ...,
        runner: object | None = None,
        workers: list[tuple[list[str], str]] = ...,
        worker_startup_timeout: float = ...,
        take_over: bool = False,
        protocol: str = "msgpack",
    ) -> Self: ...
    def start(self) -> None:
        """Binds the socket (replacing a stale one; a live server's only with ``take_over``)
        and starts serving in the background."""
    def begin_drain(self) -> None:
        """Refuses new instances and events; events in flight go on."""
    def busy(self) -> int:
        """Events not finished yet."""
    def lingering(self) -> int:
        """Connections still open on a server that a newer one replaced (0 otherwise)."""
    def replaced(self) -> bool:
        """Whether a newer server took the socket path (known once draining)."""
    def forwards(self) -> int:
        """Requests being passed on to another server right now."""
    def quiet_for(self) -> float:
        """Seconds since the last request arrived on any connection."""
    def shutdown(self, timeout: float = 10.0) -> bool:
        """Drains events in flight for up to ``timeout`` seconds, stops, removes the socket."""
    def status(self) -> dict[str, Any]:
        """The ``plugin.GetStatus`` result (with ``Workers`` under ``-m``)."""
    @property
    def model(self) -> str:
        """The execution model: threads, mixed, asyncio, gevent, greenlets or processes."""
    @property
    def socket_path(self) -> str: ...

@final
class PdkProxy:
    """The ``kong`` object a handler receives; typed by ``kong_pdk.pdk.kong``."""

    # The core implements attribute lookup in the type's getattro slot, which
    # Python shows as __getattribute__; stubtest compares that.
    def __getattribute__(self, name: str, /) -> PdkProxy: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def init_logging(level: str, prefix: str | None = None) -> None:
    """Routes the core's logs to stderr at ``level`` (error, warn, info, debug),
    each line tagged with ``prefix`` if given (a worker process)."""

def stack_chunks_cached() -> bool:
    """Whether freed interpreter stack chunks are kept for reuse (from a
    server's ``start()`` on, in every model: otherwise each event's greenlet
    or pool thread would mmap and munmap one)."""
