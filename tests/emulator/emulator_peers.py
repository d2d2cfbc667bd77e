"""Independent server-side peers for the emulator's tests.

They speak MessagePack through the stock ``msgpack`` package (never through our
``luapack``), so a test checks the emulator against another implementation:

* ``ScriptedServer``: every connection runs a test-supplied function that reads the
  emulator's raw requests and writes whatever bytes the test wants;
* ``MiniPluginServer``: a small but real plugin server (events keyed by EventId across
  connections, a thread per connection) whose plugin phases are generators yielding
  ``(method, args)`` PDK calls.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack


@dataclass
class Request:
    raw: bytes
    message: Any
    conn_no: int

    @property
    def msgid(self) -> Any:
        return self.message[1]

    @property
    def method(self) -> Any:
        return self.message[2]

    @property
    def params(self) -> Any:
        return self.message[3]


class PeerConn:
    """The server end of one connection."""

    def __init__(self, sock: socket.socket, conn_no: int) -> None:
        self.sock = sock
        self.conn_no = conn_no
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape")
        self._buf = b""

    def read_request(self) -> Request | None:
        """The next request with its exact bytes, or None at EOF."""
        while True:
            start = self._unpacker.tell()
            try:
                message = next(self._unpacker)
            except StopIteration:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self._buf += chunk
                self._unpacker.feed(chunk)
                continue
            end = self._unpacker.tell()
            return Request(self._buf[start:end], message, self.conn_no)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, msgid: Any, error: Any, result: Any) -> None:
        self.send(msgpack.packb([1, msgid, error, result], use_bin_type=True))


class ScriptedServer:
    """A listener whose connections each run ``script(conn)`` on their own thread."""

    def __init__(self, path: Path, script: Callable[[PeerConn], None]) -> None:
        self.path = path
        self.script = script
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(512)
        self.conns: list[socket.socket] = []
        self.errors: list[BaseException] = []
        self._counter = itertools.count(1)
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(sock)
            conn = PeerConn(sock, next(self._counter))
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: PeerConn) -> None:
        try:
            self.script(conn)
        except (OSError, StopIteration):
            pass
        except BaseException as exc:  # reported by the tests through .errors
            self.errors.append(exc)

    def close(self) -> None:
        self._stop = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in self.conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=5)


Phase = Callable[[dict[str, Any]], Generator[tuple[str, Any], Any, None]]


@dataclass
class _Event:
    gen: Generator[tuple[str, Any], Any, None]


@dataclass
class MiniPluginServer:
    """A tiny plugin server: StartInstance / CloseInstance / HandleEvent / Step*."""

    path: Path
    phases: dict[str, Phase]
    first_instance_id: int = 0
    notify_pid: Any = None
    requests: list[Request] = field(default_factory=list)
    instances: dict[int, dict[str, Any]] = field(default_factory=dict)
    closed_instances: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(self.first_instance_id)
        self._event_ids = itertools.count(0)
        self._events: dict[int, _Event] = {}
        self.server = ScriptedServer(self.path, self._serve)

    @property
    def errors(self) -> list[BaseException]:
        return self.server.errors

    def close(self) -> None:
        self.server.close()

    def methods(self) -> list[str]:
        with self._lock:
            return [r.method for r in self.requests]

    def _serve(self, conn: PeerConn) -> None:
        while True:
            req = conn.read_request()
            if req is None:
                return
            with self._lock:
                self.requests.append(req)
            if self.notify_pid is not None:
                conn.send(msgpack.packb([2, "serverPid", self.notify_pid]))
            try:
                result = self._dispatch(req.method, req.params)
            except LookupError as exc:
                conn.reply(req.msgid, str(exc), None)
            else:
                conn.reply(req.msgid, None, result)

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        if method == "plugin.StartInstance":
            import json

            config = json.loads(params[0]["Config"])
            with self._lock:
                iid = next(self._ids)
                self.instances[iid] = config
            return {"Name": params[0]["Name"], "Id": iid, "Config": config, "StartTime": 1.5}
        if method == "plugin.CloseInstance":
            with self._lock:
                self.closed_instances.append(params[0])
                self.instances.pop(params[0], None)
            return {"Id": params[0]}
        if method == "plugin.HandleEvent":
            iid = params[0]["InstanceId"]
            with self._lock:
                config = self.instances.get(iid)
            if config is None:
                raise LookupError(f"no plugin instance #{iid}")
            gen = self.phases[params[0]["EventName"]](config)
            with self._lock:
                event_id = next(self._event_ids)
                self._events[event_id] = _Event(gen)
            return self._advance(event_id, gen, None, first=True)
        if method.startswith("plugin.Step"):
            event_id = params[0].get("EventId")
            with self._lock:
                event = self._events.get(event_id)
            if event is None:
                raise LookupError(f"event id {event_id} not found")
            return self._advance(event_id, event.gen, params[0].get("Data"), first=False)
        raise LookupError(f"method {method} not implemented")

    def _advance(self, event_id: int, gen: Any, value: Any, first: bool) -> Any:
        try:
            method, args = next(gen) if first else gen.send(value)
        except StopIteration:
            with self._lock:
                self._events.pop(event_id, None)
            return {"Data": "ret", "EventId": event_id}
        return {"Data": {"Method": method, "Args": args}, "EventId": event_id}
