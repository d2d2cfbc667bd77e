"""Kong's side of ProtoBuf:1 (docs/protobuf.md): commands and one event.

As Kong's plugin-server Lua does on that wire: one connection per command, the
``RpcCall`` frame, and for HandleEvent the bridge loop (a method-name frame and an
arguments frame from the server, the PDK function answered from the answer tables,
its result frame back, until an empty name), then the ``RpcReturn``, whose
sequence must be Kong's. A closed connection is an error containing "closed",
which makes Kong start the instance again (``KongEmulator.run_phase``).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from kong_pdk.testing.kong.answers import AnswerTable, resolve
from kong_pdk.testing.kong.errors import KongProtocolError, LuaError, TransportError
from kong_pdk.testing.kong.event_result import EventResult, PdkCall, TerminalCall
from kong_pdk.testing.kong.pb_lua import unwrap, wrap
from kong_pdk.testing.kong.pb_schema import pb_schema
from kong_pdk.testing.kong.pdk_facts import pdk_facts

__all__ = ["PbClient"]

_LEN = struct.Struct("=I")  # the machine's byte order, as Kong's lua_pack "I"


class _Conn:
    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise TransportError(f"connect: {exc}") from exc

    def send(self, payload: bytes) -> None:
        try:
            self.sock.sendall(_LEN.pack(len(payload)) + payload)
        except OSError as exc:
            raise TransportError(f"closed: {exc}") from exc

    def read(self) -> bytes:
        (n,) = _LEN.unpack(self._exactly(4))
        return self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except OSError as exc:
                raise TransportError(f"closed: {exc}") from exc
            if not chunk:
                raise TransportError("closed")
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()


class PbClient:
    """Kong's ProtoBuf:1 RPC object for one plugin server socket."""

    def __init__(self, socket_path: str, schema: bytes, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.schema = pb_schema(schema)
        self._sequence = 0

    def call(self, command: str, body: Any, bridge: Callable[[_Conn], None] | None = None) -> Any:
        """One ``RpcCall`` on a new connection; its ``RpcReturn``."""
        schema = self.schema
        self._sequence += 2  # Kong counts twice per call
        sequence = self._sequence
        conn = _Conn(self.socket_path, self.timeout)
        try:
            conn.send(schema.RpcCall(sequence=sequence, **{command: body}).SerializeToString())
            if bridge is not None:
                bridge(conn)
            ret = schema.RpcReturn.FromString(conn.read())
        finally:
            conn.close()
        if ret.sequence != sequence:
            raise KongProtocolError(f"RpcReturn sequence {ret.sequence}, expected {sequence}")
        return ret

    def start_instance(self, name: str, config_json: str) -> int:
        schema = self.schema
        cmd = schema.RpcCall.DESCRIPTOR.fields_by_name["cmd_start_instance"].message_type
        from google.protobuf import message_factory

        body = message_factory.GetMessageClass(cmd)(name=name, config=config_json.encode())
        ret = self.call("cmd_start_instance", body)
        if not ret.HasField("instance_status"):
            raise KongProtocolError("StartInstance returned no instance_status (Kong: attempt to index a nil value)")
        return int(ret.instance_status.instance_id)

    def close_instance(self, instance_id: int) -> Any:
        return self.call("cmd_close_instance", self._cmd("cmd_close_instance", instance_id=instance_id))

    def _cmd(self, field: str, **values: object) -> Any:
        from google.protobuf import message_factory

        descriptor = self.schema.RpcCall.DESCRIPTOR.fields_by_name[field].message_type
        return message_factory.GetMessageClass(descriptor)(**values)

    def run_event(
        self,
        instance_id: int,
        phase: str,
        tables: Sequence[AnswerTable],
        kong_log: Callable[[str], None],
    ) -> EventResult:
        """HandleEvent with its bridge loop."""
        schema = self.schema
        event = EventResult(instance_id=instance_id, phase=phase)
        started = time.perf_counter()

        def bridge(conn: _Conn) -> None:
            while True:
                name = conn.read().decode("utf-8", "surrogateescape")
                if name == "":
                    return
                raw = conn.read()
                method = schema.methods.get(name)
                if method is None:
                    # Kong: `method %q not found`, the event fails (a 500 from 3.8).
                    event.outcome = "lua_error"
                    event.lua_error = f"method {name!r} not found"
                    kong_log(f"pluginserver error: method {name!r} not found")
                    raise _Abandon
                args = unwrap(method.input_name, method.input.FromString(raw))
                if name in pdk_facts().terminal:
                    status, body, headers = (args + (None, None, None))[:3]
                    event.terminal = TerminalCall(name, status, body, headers)
                    event.outcome = "exit"
                    event.calls.append(PdkCall(method=name, args=args, raw_args=raw, found=True,
                                               source="terminal", returns=()))
                    conn.send(b"")
                    continue
                try:
                    resolution = resolve(name, args, tables)
                    value = resolution.returns[0] if resolution.returns else None
                    reply = wrap(method.output, method.output_name, value)
                except LuaError as exc:
                    event.outcome = "lua_error"
                    event.lua_error = str(exc)
                    event.calls.append(PdkCall(method=name, args=args, raw_args=raw, found=True,
                                               source="lua_error", returns=()))
                    kong_log(f"lua error in {name}: {exc}")
                    raise _Abandon from exc
                event.calls.append(PdkCall(method=name, args=args, raw_args=raw, found=resolution.found,
                                           source=resolution.source, returns=resolution.returns,
                                           has_data=value is not None, data=value))
                conn.send(reply)

        try:
            self.call("cmd_handle_event", self._cmd("cmd_handle_event", instance_id=instance_id, event_name=phase),
                      bridge)
        except _Abandon:
            pass
        except (TransportError, KongProtocolError) as exc:
            exc.partial = event
            raise
        finally:
            event.elapsed = time.perf_counter() - started
        return event


class _Abandon(Exception):
    """Kong gives the event up (a Lua error): the connection is dropped."""
