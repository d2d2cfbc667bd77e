"""One connection to the server, used by one RPC at a time (docs/protocol.md §2).

Kong writes exactly one request ``[0, msgid, method, params]`` (``params`` always an
array, §3.1), then reads until it has one reply, and never pipelines. The extra methods
(``send_raw``, ``read_message``, ``recv_raw``) exist for tests that send hand-made bytes.
"""

from __future__ import annotations

import socket
from typing import Protocol

from kong_pdk.testing.kong.errors import RpcError, TransportError
from kong_pdk.testing.kong.luapack import pack
from kong_pdk.testing.kong.wire import Notification, Reply, read_message, read_reply

__all__ = ["KongConnection", "ConnectionHost"]


class ConnectionHost(Protocol):
    """What a connection needs from the emulator that owns it."""

    def next_msgid(self) -> int: ...

    def on_notification(self, note: Notification) -> None: ...

    def count_discarded(self, n: int) -> None: ...


class KongConnection:
    def __init__(self, sock: socket.socket, host: ConnectionHost) -> None:
        self._sock = sock
        self._host = host
        self.closed: bool = False

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are, e.g. a malformed frame."""
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise TransportError(str(exc) or "send failed") from exc

    def send_request(self, method: str, params: list[object], msgid: int | None = None) -> int:
        """Write one request packed as Kong packs it; returns its msgid."""
        if msgid is None:
            msgid = self._host.next_msgid()
        self.send_raw(pack([0, msgid, method, params]))
        return msgid

    def read_reply(self, msgid: int | None = None) -> Reply:
        """Read one reply as Kong does (§2 "Reading"); ``msgid=None`` skips that assert."""
        reply = read_reply(self._sock, msgid, self._host.on_notification)
        self._host.count_discarded(reply.discarded_bytes)
        return reply

    def read_message(self) -> object:
        """Read one MessagePack object with no checks at all."""
        obj, leftover = read_message(self._sock)
        self._host.count_discarded(leftover)
        return obj

    def recv_raw(self, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Whatever bytes arrive next (b"" once the server closed the connection)."""
        old = self._sock.gettimeout()
        if timeout is not None:
            self._sock.settimeout(timeout)
        try:
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise TransportError("timeout") from exc
        finally:
            self._sock.settimeout(old)

    def exchange(self, method: str, params: list[object]) -> Reply:
        """One request and its reply, the reply's error left in place."""
        msgid = self.send_request(method, params)
        return self.read_reply(msgid)

    def call(self, method: str, params: list[object]) -> object:
        """One RPC; an error reply raises ``RpcError``."""
        reply = self.exchange(method, params)
        if reply.error is not None:
            raise RpcError(reply.error, method=method)
        return reply.result

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()
