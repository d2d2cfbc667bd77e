"""``KongEmulator``: plays Kong against a plugin server over its Unix socket.

It is "our Kong": it follows docs/protocol.md to the letter, quirks included, and
is never bent to fit a server. The pieces live in their own modules:

* ``luapack``: Kong's encoder (§3.2); ``wire``: Kong's reader (§2, §3.1);
* ``pool``, ``connection``, ``rpc``: pooled connections and msgids (§2);
* ``instance_config``/``cjson``: the ``Config`` JSON text of StartInstance (§6.5);
* ``event_loop``, ``steps``, ``answers``: HandleEvent and the Step loop (§5, §6);
* ``instances``: Kong's instance cache and its recovery from "no plugin instance" (§7);
* ``query``: the plugins Kong registers from a query command's output (§1.4);
* ``versions``: what Kong's side does differently per version (§9);
* ``pb_schema``, ``pb_lua``, ``pb_event_loop``: ProtoBuf:1 (docs/protobuf.md), when the
  plugin's dump asks for it (``protocol="ProtoBuf:1"``), with the protobuf package.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from kong_pdk.testing.kong.answers import AnswerTable
from kong_pdk.testing.kong.connection import KongConnection
from kong_pdk.testing.kong.errors import KongProtocolError, RpcError, TransportError
from kong_pdk.testing.kong.event_loop import run_event
from kong_pdk.testing.kong.event_result import EventResult
from kong_pdk.testing.kong.instance_config import DEFAULT_WS_ID, Bookkeeping, build_config, default_plugin_id
from kong_pdk.testing.kong.instances import CachedInstance, InstanceCache
from kong_pdk.testing.kong.query import DEFAULT_PROTOCOL, QueryResult, read_query_output
from kong_pdk.testing.kong.rpc import RpcClient
from kong_pdk.testing.kong.versions import (
    LATEST,
    KongVersion,
    KongVersionLike,
    parse_kong_version,
    reset_scope,
    resets_on_any_error,
)
from kong_pdk.testing.kong.wire import Notification, Reply

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kong_pdk.testing.kong.pb_event_loop import PbClient

__all__ = ["KongEmulator", "PROTOBUF"]

#: The dump's name of Kong's other wire (docs/protobuf.md).
PROTOBUF = "ProtoBuf:1"


class KongEmulator:
    """One Kong worker talking to one plugin server socket.

    ``answers`` maps PDK method names to answers (a value, a ``LuaMulti``, or a callable
    taking the Lua arguments); ``handle_event``/``run_phase`` accept per-call overrides.
    ``kong_version`` (``"3.4"``, ``"3.4.2"`` or ``(3, 4)``; the latest, 3.9, by
    default) selects Kong's version-dependent behaviour (§9, ``versions``): which
    cached instances an error resets, which dumped plugins are registered,
    ``__seq__`` and bookkeeping keys, StepError and str raw bodies before 3.0.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        answers: AnswerTable | None = None,
        kong_version: KongVersionLike = LATEST,
        pool_size: int = 256,
        timeout: float = 60.0,
        idle_timeout: float = 60.0,
        max_phase_tries: int = 3,
        protocol: str = DEFAULT_PROTOCOL,
        protobuf_schema: bytes | None = None,
    ) -> None:
        self.rpc: RpcClient = RpcClient(socket_path, pool_size=pool_size, timeout=timeout, idle_timeout=idle_timeout)
        self.answers: dict[str, object] = dict(answers or {})
        self.kong_version: KongVersion = parse_kong_version(kong_version)
        self.max_phase_tries: int = max_phase_tries
        self.instances: InstanceCache = InstanceCache()
        self._lock = threading.Lock()
        self._log: list[str] = []
        # __seq__: a shared counter from 1 on 3.6+, a per-worker counter from 0 before (§6.5).
        self._seq = 0 if self.kong_version >= (3, 6) else -1
        # The wire: MsgPack:1, or what the query command's output registered
        # (register_plugins) or the caller chose ("ProtoBuf:1").
        if protocol not in (DEFAULT_PROTOCOL, PROTOBUF):
            raise ValueError(f"the emulator speaks {DEFAULT_PROTOCOL} and {PROTOBUF}, not {protocol!r}")
        self.protocol: str = protocol
        self._timeout = timeout
        self._pb: PbClient | None = None
        # ProtoBuf:1's compiled schema (kong_pdk._core.PROTOBUF_SCHEMA; the kit passes it).
        self._pb_schema = protobuf_schema
        self.plugins: dict[str, Mapping[str, object]] = {}
        self.rpc.pid_listeners.append(self._on_pid_change)

    # -- plumbing --------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return self.rpc.socket_path

    @property
    def discarded_bytes(self) -> int:
        """Bytes the server wrote after a reply, which Kong throws away (§2)."""
        return self.rpc.discarded_bytes

    @property
    def notifications(self) -> list[Notification]:
        return list(self.rpc.notifications)

    @property
    def server_pid(self) -> object:
        return self.rpc.server_pid

    @property
    def connections_opened(self) -> int:
        return self.rpc.connections_opened

    @property
    def log(self) -> list[str]:
        """Kong's log lines (unknown PDK methods, retries, ignored errors …)."""
        with self._lock:
            return list(self._log)

    def kong_log(self, line: str) -> None:
        with self._lock:
            self._log.append(line)

    def call(self, method: str, params: list[object]) -> object:
        """One RPC over the pool, exactly as Kong makes it; an error reply raises RpcError."""
        return self.rpc.call(method, params)

    def exchange(self, method: str, params: list[object]) -> Reply:
        """One RPC over the pool; the reply is returned even when it carries an error."""
        return self.rpc.exchange(method, params)

    @contextlib.contextmanager
    def connection(self) -> Iterator[KongConnection]:
        """A dedicated connection for hand-made bytes: ``send_raw``, ``read_reply``, ``call``."""
        with self.rpc.connection() as conn:
            yield conn

    @property
    def pb(self) -> PbClient:
        """The ProtoBuf:1 side (made on first use: it needs the protobuf package)."""
        if self._pb is None:
            from kong_pdk.testing.kong.pb_event_loop import PbClient

            if self._pb_schema is None:
                raise ValueError(
                    f"speaking {PROTOBUF} needs its schema: KongEmulator(..., "
                    "protobuf_schema=kong_pdk._core.PROTOBUF_SCHEMA)"
                )
            self._pb = PbClient(self.socket_path, self._pb_schema, self._timeout)
        return self._pb

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> KongEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plugins and instances -------------------------------------------------------

    def register_plugins(self, query_output: str | bytes) -> QueryResult:
        """Register the plugins of a query command's output (``--dump``) as this Kong does (§1.4).

        The emulator speaks ``MsgPack:1`` and ``ProtoBuf:1``; another ``Protocol`` is refused.
        """
        result = read_query_output(query_output, self.kong_version)
        if result.protocol not in (DEFAULT_PROTOCOL, PROTOBUF):
            raise ValueError(
                f"the emulator speaks {DEFAULT_PROTOCOL} and {PROTOBUF}; the query output asks for {result.protocol}"
            )
        for line in result.log:
            self.kong_log(line)
        self.protocol = result.protocol
        for info in result.plugins:
            self.plugins.setdefault(str(info["Name"]), info)
        return result

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def start_instance(
        self,
        name: str,
        config: Mapping[str, object],
        *,
        plugin_id: str | None = None,
        seq: int | None = None,
        route_id: str | None = None,
        service_id: str | None = None,
        consumer_id: str | None = None,
        instance_name: str | None = None,
        ws_id: str = DEFAULT_WS_ID,
        key: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> int:
        """``plugin.StartInstance`` with ``Config`` as Kong's JSON text; returns ``Id``."""
        book = Bookkeeping(
            plugin_id=plugin_id or default_plugin_id(name),
            seq=self.next_seq() if seq is None else seq,
            route_id=route_id,
            service_id=service_id,
            consumer_id=consumer_id,
            instance_name=instance_name,
            ws_id=ws_id,
            key=key,
            extra=extra,
        )
        text = build_config(name, config, book, self.kong_version)
        if self.protocol == PROTOBUF:
            return self.pb.start_instance(name, text)
        result = self.rpc.call("plugin.StartInstance", [{"Name": name, "Config": text}])
        if not isinstance(result, Mapping):
            raise KongProtocolError(f"StartInstance result must be a map with Id, got {result!r}")
        instance_id = result.get("Id")
        if isinstance(instance_id, bool) or not isinstance(instance_id, (int, float)):
            raise KongProtocolError(f"StartInstance result has no integer Id: {result!r}")
        if instance_id != int(instance_id):
            raise KongProtocolError(f"StartInstance Id is not an integer: {instance_id!r}")
        return int(instance_id)

    def close_instance(self, instance_id: int) -> object:
        """``plugin.CloseInstance [id]``; Kong ignores the result and any error (§4.1)."""
        if self.protocol == PROTOBUF:
            try:
                return self.pb.close_instance(instance_id)
            except (RpcError, KongProtocolError) as exc:
                self.kong_log(f"closing instance #{instance_id}: {exc}")
                return None
        try:
            return self.rpc.call("plugin.CloseInstance", [instance_id])
        except RpcError as exc:
            self.kong_log(f"closing instance #{instance_id}: {exc.message}")
            return None

    def forget_instances(self, plugin_name: str | None = None) -> None:
        """Drop cached instance ids (without CloseInstance): of one plugin, or all."""
        self.instances.forget(plugin_name=plugin_name)

    def _on_pid_change(self, old: object, new: object) -> None:
        # A different serverPid: Kong forgets every id tied to this RPC object (§2).
        self.kong_log(f"plugin server pid changed from {old!r} to {new!r}; forgetting instances")
        self.instances.forget()

    # -- events ----------------------------------------------------------------------

    def handle_event(
        self,
        instance_id: int,
        phase: str,
        answers: AnswerTable | None = None,
    ) -> EventResult:
        """HandleEvent plus the Step loop for one phase (§5.1)."""
        tables = [self.answers] if answers is None else [self.answers, answers]
        if self.protocol == PROTOBUF:
            return self.pb.run_event(instance_id, phase, tables, self.kong_log)
        return run_event(self.rpc, instance_id, phase, tables, self.kong_version, self.kong_log)

    def run_phase(
        self,
        plugin_name: str,
        config: Mapping[str, object],
        phase: str,
        *,
        plugin_id: str | None = None,
        answers: AnswerTable | None = None,
    ) -> EventResult:
        """Run a phase the way Kong's runloop does, with its instance cache (§7).

        Starts the instance on first use and caches its id by plugin row id; a changed
        config starts a new instance and then closes the old one. On an error containing
        "no plugin instance" cached ids are forgotten (which ones depends on the version,
        ``versions.reset_scope``) and the phase retried; Kong retries without bound, we
        give up after ``max_phase_tries`` attempts. 3.5 and 3.6 also forget them on any
        other error.
        """
        key = plugin_id or default_plugin_id(plugin_name)
        last: RpcError | None = None
        for _ in range(self.max_phase_tries):
            instance_id = self._instance_for(plugin_name, config, key)
            try:
                return self.handle_event(instance_id, phase, answers)
            except TransportError as exc:
                # On ProtoBuf:1 a closed connection is how the server says it
                # does not know the instance: Kong starts it again and retries.
                if self.protocol == PROTOBUF and "closed" in exc.message.lower():
                    last = exc
                    self.kong_log(f"{exc.message}; resetting instances of {plugin_name!r} and retrying")
                    self._reset_after_error(plugin_name, key)
                    continue
                raise
            except RpcError as exc:
                last = exc
                if exc.is_no_plugin_instance:
                    self.kong_log(f"{exc.message}; resetting instances of {plugin_name!r} and retrying")
                    self._reset_after_error(plugin_name, key)
                    continue
                if resets_on_any_error(self.kong_version):
                    self._reset_after_error(plugin_name, key)
                raise
        assert last is not None
        raise last

    def _reset_after_error(self, plugin_name: str, key: str) -> None:
        scope = reset_scope(self.kong_version)
        if scope == "row":
            self.instances.forget(key=key)
        elif scope == "server":
            self.instances.forget()  # this emulator plays one server socket
        else:
            self.instances.forget(plugin_name=plugin_name)

    def _instance_for(self, plugin_name: str, config: Mapping[str, object], key: str) -> int:
        with self.instances.claim(key):
            entry = self.instances.get(key)
            if entry is not None and entry.plugin_name == plugin_name and entry.config == config:
                return entry.instance_id
            seq = self.next_seq()
            instance_id = self.start_instance(plugin_name, config, plugin_id=key, seq=seq)
            self.instances.put(
                key, CachedInstance(plugin_name, key, instance_id, seq, copy.deepcopy(dict(config)))
            )
        if entry is not None:
            # Kong stores the new id first, then closes the old one, ignoring the result.
            self.close_instance(entry.instance_id)
        return instance_id
