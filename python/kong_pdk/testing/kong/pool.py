"""Kong's keepalive pool of idle connections (docs/protocol.md §2 "Connections").

Per RPC, OpenResty's ``connect`` takes an idle connection from the pool (the most
recently returned first) or opens a new one; after the reply, ``setkeepalive`` puts it
back. Kong's template sets 256 idle connections per socket path, with a 60 s idle
timeout; a connection returned to a full pool is closed.

OpenResty also watches idle pooled connections: one that the server closes, or on which
bytes arrive while it sits idle, is closed and dropped from the pool. We check that when
a connection is taken (the moment it matters), and report any such bytes as discarded.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["ConnectionPool"]


class ConnectionPool:
    def __init__(self, size: int, idle_timeout: float, on_discard: Callable[[int], None]) -> None:
        self._size = size
        self._idle_timeout = idle_timeout
        self._on_discard = on_discard
        self._idle: collections.deque[tuple[socket.socket, float]] = collections.deque()
        self._lock = threading.Lock()
        self.closed_by_peer: int = 0

    def take(self) -> socket.socket | None:
        """An idle, healthy connection, or None when a new one must be opened."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                sock, since = self._idle.pop()  # LIFO, like OpenResty's cache queue
            if time.monotonic() - since > self._idle_timeout:
                sock.close()
                continue
            if self._healthy(sock):
                return sock

    def give(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append((sock, time.monotonic()))
                return
        sock.close()  # pool full: closed after use

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for sock, _ in idle:
            sock.close()

    def _healthy(self, sock: socket.socket) -> bool:
        timeout = sock.gettimeout()
        # A socket with a timeout would first wait for data; a non-blocking one answers now.
        sock.setblocking(False)
        try:
            peeked = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            sock.settimeout(timeout)
            return True  # nothing pending: a normal idle connection
        except OSError:
            sock.close()
            return False
        if not peeked:
            with self._lock:
                self.closed_by_peer += 1
            sock.close()
            return False
        # Bytes arrived while the connection was idle: OpenResty drops the connection.
        self._on_discard(self._drain(sock))
        sock.close()
        return False

    @staticmethod
    def _drain(sock: socket.socket) -> int:
        total = 0
        while True:
            try:
                data = sock.recv(65536)  # the socket is non-blocking here
            except (BlockingIOError, InterruptedError, OSError):
                return total
            if not data:
                return total
            total += len(data)
