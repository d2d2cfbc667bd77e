"""A bare MessagePack peer and /proc readings for the reliability tests.

The KongEmulator plays a well-behaved Kong; these tests also need a peer that
misbehaves (never reads, sends odd msgids, floods) and a look at the server
process from outside (memory, descriptors).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import msgpack


class RawPeer:
    """One connection driven by hand: write any object or bytes, read replies."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)

    def send(self, obj: object) -> None:
        self.sock.sendall(msgpack.packb(obj))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Any:
        """The next message, notifications included."""
        while True:
            for obj in self._unpacker:
                return obj
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._unpacker.feed(chunk)

    def reply(self) -> list[Any]:
        """The next ``[1, msgid, error, result]``, skipping ``[2, ...]`` notifications."""
        while True:
            msg = self.read()
            if isinstance(msg, list) and msg and msg[0] == 2:
                continue
            assert isinstance(msg, list) and len(msg) == 4 and msg[0] == 1, msg
            return msg

    def call(self, method: str, params: list[object], msgid: object = 1) -> list[Any]:
        self.send([0, msgid, method, params])
        return self.reply()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, e.g. VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(check: Any, timeout: float = 5.0, period: float = 0.05) -> Any:
    """Polls ``check()`` until it returns something true, or the timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(period)
        value = check()
    return value
