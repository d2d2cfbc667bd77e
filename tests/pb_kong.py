"""Kong's side of ProtoBuf:1 for tests, with the stock protobuf library.

The message classes are generated at test time from our .proto
(src/protobuf/pluginsocket.proto) with grpcio-tools' protoc; the framing
and the event loop follow Kong's pb_rpc.lua as docs/protobuf.md describes
it: a 4-byte native-endian length, then the message; during an event a
method-name frame and an arguments frame from the server, a reply frame
from Kong, until an empty method name; then the RpcReturn.
"""

from __future__ import annotations

import importlib
import re
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PROTO = Path(__file__).resolve().parent.parent / "src" / "protobuf" / "pluginsocket.proto"


@cache
def pb2(out_dir: str) -> ModuleType:
    """``pluginsocket_pb2``, compiled into ``out_dir``."""
    pytest.importorskip("google.protobuf", reason="needs protobuf: pip install protobuf grpcio-tools (make dev)")
    grpc_tools = pytest.importorskip("grpc_tools", reason="needs grpcio-tools: pip install grpcio-tools (make dev)")
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out_dir}", PROTO.name]
    )
    assert rc == 0, "protoc failed on our .proto"
    sys.path.insert(0, out_dir)
    try:
        return importlib.import_module("pluginsocket_pb2")
    finally:
        sys.path.remove(out_dir)


def kong_name(pb: ModuleType, method: Any) -> str:
    """The PDK name Kong gives a service method (its MethodName option, else the rule)."""
    options = method.GetOptions()
    if options.HasExtension(pb.MethodName):
        return str(options.Extensions[pb.MethodName])
    dotted = f"Kong.{method.name}".replace("_", ".")
    return re.sub(r"([a-z]\d*)([A-Z])", r"\1_\2", dotted).lower()


def methods(pb: ModuleType) -> dict[str, Any]:
    return {kong_name(pb, m): m for m in pb.DESCRIPTOR.services_by_name["Kong"].methods}


def message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def frame(payload: bytes) -> bytes:
    return struct.pack("=I", len(payload)) + payload


@dataclass
class Call:
    """One PDK call as Kong received it: the name and the decoded input message."""

    name: str
    args: Any


@dataclass
class KongPb:
    """One connection to the server, as Kong's pb_rpc.lua drives it."""

    pb: ModuleType
    sock: socket.socket
    sequence: int = 0
    calls: list[Call] = field(default_factory=list)

    @classmethod
    def connect(cls, pb: ModuleType, path: str) -> KongPb:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        return cls(pb, s)

    def close(self) -> None:
        self.sock.close()

    def read_frame(self) -> bytes:
        head = self._exactly(4)
        (n,) = struct.unpack("=I", head)
        return self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def call(self, answer: Callable[[Call], Any] | None = None, **cmd: Any) -> Any:
        """Sends an RpcCall; during an event, answers each PDK call with ``answer``."""
        self.sequence += 2
        rpc = self.pb.RpcCall(sequence=self.sequence, **cmd)
        self.sock.sendall(frame(rpc.SerializeToString()))
        if answer is not None:
            table = methods(self.pb)
            while True:
                name = self.read_frame().decode()
                if name == "":
                    break
                method = table[name]
                args = message_class(method.input_type).FromString(self.read_frame())
                call = Call(name, args)
                self.calls.append(call)
                reply = answer(call)
                if reply is None:
                    reply = message_class(method.output_type)()
                self.sock.sendall(frame(reply.SerializeToString()))
        ret = self.pb.RpcReturn.FromString(self.read_frame())
        assert ret.sequence == self.sequence
        return ret

    def start(self, name: str, config: str = "{}") -> int:
        ret = self.call(cmd_start_instance=self.pb.CmdStartInstance(name=name, config=config.encode()))
        return int(ret.instance_status.instance_id)

    def event(self, instance_id: int, phase: str, answer: Callable[[Call], Any]) -> Any:
        return self.call(answer, cmd_handle_event=self.pb.CmdHandleEvent(instance_id=instance_id, event_name=phase))
