"""ProtoBuf:1's messages for the emulator, from a compiled schema.

The schema is a serialized ``FileDescriptorSet``: the one the core compiles from
``src/protobuf/pluginsocket.proto`` at build time (``kong_pdk._core.PROTOBUF_SCHEMA``,
which the kit hands the emulator; this package itself never imports the core). The
protobuf package builds message classes from it in a pool of their own, so no
protoc is needed and a test's own ``pluginsocket_pb2`` cannot clash with it. Each PDK function's input
and output messages come from the schema's ``service Kong``, its PDK name from
pdk-api.json (``"protobuf"``: the service method that carries it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PbMethod", "PbSchema", "pb_schema"]


@dataclass(frozen=True)
class PbMethod:
    name: str  # the PDK name, as the method-name frame carries it
    input: Any  # message class
    output: Any
    input_name: str  # full name, e.g. "kong_plugin_protocol.String"
    output_name: str


@dataclass(frozen=True)
class PbSchema:
    RpcCall: Any
    RpcReturn: Any
    methods: dict[str, PbMethod]
    messages: dict[str, Any]  # full name -> class


@cache
def pb_schema(compiled: bytes) -> PbSchema:
    """The message classes and the method table of ``compiled``; RuntimeError without
    the protobuf package."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError as exc:
        raise RuntimeError(
            "the emulator speaks ProtoBuf:1 with the protobuf package: pip install protobuf"
        ) from exc
    files = descriptor_pb2.FileDescriptorSet.FromString(compiled)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    service = pool.FindServiceByName("kong_plugin_protocol.Kong")

    def cls(descriptor: Any) -> Any:
        return message_factory.GetMessageClass(descriptor)

    data = json.loads((Path(__file__).parent.parent.parent / "pdk" / "pdk-api.json").read_text(encoding="utf-8"))
    names = {f["protobuf"]: f["name"] for f in data["functions"] if f.get("protobuf")}
    methods: dict[str, PbMethod] = {}
    messages: dict[str, Any] = {}
    for m in service.methods:
        name = names[m.name]
        methods[name] = PbMethod(name, cls(m.input_type), cls(m.output_type), m.input_type.full_name,
                                 m.output_type.full_name)
        messages[m.input_type.full_name] = methods[name].input
        messages[m.output_type.full_name] = methods[name].output
    return PbSchema(
        RpcCall=cls(pool.FindMessageTypeByName("kong_plugin_protocol.RpcCall")),
        RpcReturn=cls(pool.FindMessageTypeByName("kong_plugin_protocol.RpcReturn")),
        methods=methods,
        messages=messages,
    )
