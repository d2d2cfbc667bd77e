"""Kong's RPC object for one plugin server socket (docs/protocol.md §2, §3.1).

Each RPC checks a connection out of the keepalive pool (or opens one), writes one
request, reads one reply and puts the connection back. msgids come from one counter
starting at 1, as a Kong worker keeps per plugin. A connection on which the server broke
the protocol or the transport failed is closed, never pooled again (in Kong the Lua
error abandons the socket).

The server's ``serverPid`` notifications are remembered; when the pid changes, Kong
forgets every instance id it cached for this socket, and so do we (listeners).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator

from kong_pdk.testing.kong.connection import KongConnection
from kong_pdk.testing.kong.errors import RpcError, TransportError
from kong_pdk.testing.kong.pool import ConnectionPool
from kong_pdk.testing.kong.wire import Notification, Reply

__all__ = ["RpcClient"]


class RpcClient:
    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        pool_size: int = 256,
        timeout: float = 60.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.socket_path: str = os.fspath(socket_path)
        self.timeout: float = timeout
        self._lock = threading.Lock()
        self._msgid = 0
        self._discarded = 0
        self.connections_opened: int = 0
        self.notifications: list[Notification] = []
        self.server_pid: object = None
        self.pid_listeners: list[Callable[[object, object], None]] = []
        self.pool: ConnectionPool = ConnectionPool(pool_size, idle_timeout, self.count_discarded)

    # -- ConnectionHost ------------------------------------------------------------

    def next_msgid(self) -> int:
        with self._lock:
            self._msgid += 1
            return self._msgid

    def count_discarded(self, n: int) -> None:
        if n:
            with self._lock:
                self._discarded += n

    def on_notification(self, note: Notification) -> None:
        with self._lock:
            self.notifications.append(note)
        if note.label != "serverPid":
            return  # unknown labels are ignored (§2)
        pid = _lua_tonumber(note.args)
        with self._lock:
            old, self.server_pid = self.server_pid, pid
        if old is not None and old != pid:
            for listener in list(self.pid_listeners):
                listener(old, pid)

    # -- RPCs ----------------------------------------------------------------------

    @property
    def discarded_bytes(self) -> int:
        """Bytes the server sent after a reply (or to an idle connection): Kong drops them."""
        with self._lock:
            return self._discarded

    def open_connection(self) -> KongConnection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)  # OpenResty's default 60 s connect/send/read (§2)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise TransportError(f"connect() to unix:{self.socket_path} failed: {exc}") from exc
        with self._lock:
            self.connections_opened += 1
        return KongConnection(sock, self)

    def exchange(self, method: str, params: list[object]) -> Reply:
        """One RPC on a pooled connection; the reply is returned even if it is an error."""
        sock = self.pool.take()
        conn = KongConnection(sock, self) if sock is not None else self.open_connection()
        try:
            reply = conn.exchange(method, params)
        except BaseException:
            # A broken protocol, a failed read or an interrupted call: Kong drops the socket.
            conn.close()
            raise
        self.pool.give(conn.socket)
        return reply

    def call(self, method: str, params: list[object]) -> object:
        reply = self.exchange(method, params)
        if reply.error is not None:
            raise RpcError(reply.error, method=method)
        return reply.result

    @contextlib.contextmanager
    def connection(self) -> Iterator[KongConnection]:
        """A dedicated new connection for hand-made traffic; closed on exit."""
        conn = self.open_connection()
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        self.pool.close_all()


def _lua_tonumber(value: object) -> object:
    """The pid may be an integer or a numeric string (§2); compare them as numbers."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return float(value.strip())
            except ValueError:
                return value
    return value
