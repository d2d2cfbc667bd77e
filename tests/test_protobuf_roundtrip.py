"""Every ProtoBuf:1 function, through the proxy, the socket and a stock protobuf peer.

Table-driven over the service of our .proto (the 74 functions Kong has on this
wire): tests/plugins/every_call.py, served with ``--protocol protobuf``, calls
each one with arguments made from pdk-api.json's parameter types; Kong's side
(tests/pb_kong.py) checks the input message it gets and answers with a message
of the function's result type; the plugin reports the value it got back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pb_kong import Call, KongPb, message_class, methods, pb2
from test_pdk_roundtrip import call_args

from serving import PLUGINS, wait_for_socket

DATA = json.loads((Path(__file__).parent.parent / "python/kong_pdk/pdk/pdk-api.json").read_text())
BY_NAME = {f["name"]: f for f in DATA["functions"]}
SHORT_NAMES = sorted(f["name"] for f in DATA["functions"] if f.get("protobuf"))


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return pb2(str(tmp_path_factory.mktemp("pb2")))


@pytest.fixture(scope="module", params=["threads", "greenlets", "gevent"])
def kong(
    pb: ModuleType, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[KongPb, int]]:
    """One server per execution model for the whole table (the thread model,
    greenlets on the GreenletRunner's loop, and -g where the gevent hub owns
    the socket)."""
    if request.param == "gevent":
        pytest.importorskip("gevent", reason="the -g model needs gevent (make dev installs it)")
    prefix = tmp_path_factory.mktemp("pb-roundtrip")
    log_path = prefix / "server.log"
    model = ["-g"] if request.param == "gevent" else ["--model", request.param]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(PLUGINS / "every_call.py"), "-p", str(prefix), "--socket-name", "e.socket",
             "--protocol", "protobuf", *model],
            stderr=log,
        )
    try:
        wait_for_socket(str(prefix / "e.socket"), proc, log_path)
        conn = KongPb.connect(pb, str(prefix / "e.socket"))
        yield conn, conn.start("every-call")
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)


def answer_for(pb: ModuleType, output: str) -> tuple[Any, Any]:
    """(Kong's result message, the value the plugin should get) for a result type."""
    from google.protobuf import struct_pb2

    if output == "google.protobuf.Struct":
        s = struct_pb2.Struct()
        s.update({"a": ["1", "2"], "b": "3", "flag": True})
        return s, {"a": ["1", "2"], "b": ["3"], "flag": []}
    simple: dict[str, tuple[Any, Any]] = {
        "google.protobuf.Empty": (None, None),
        "google.protobuf.Value": (struct_pb2.Value(string_value="anything"), "anything"),
        "kong_plugin_protocol.String": (pb.String(v="answer"), "answer"),
        "kong_plugin_protocol.Int": (pb.Int(v=42), 42),
        "kong_plugin_protocol.Number": (pb.Number(v=2.5), 2.5),
        "kong_plugin_protocol.Bool": (pb.Bool(v=True), True),
        "kong_plugin_protocol.ByteString": (pb.ByteString(v=b"\x00\xffbody"), "\x00\udcffbody"),
        "kong_plugin_protocol.RawBodyResult": (pb.RawBodyResult(content=b"raw body"), "raw body"),
        "kong_plugin_protocol.UriCapturesResult": (
            pb.UriCapturesResult(unnamed=[b"u1"], named={"n": b"v"}),
            {"unnamed": ["u1"], "named": {"n": "v"}},
        ),
        "kong_plugin_protocol.AuthenticatedCredential": (
            pb.AuthenticatedCredential(id="k1", consumer_id="c1"),
            {"id": "k1", "consumer_id": "c1"},
        ),
        "kong_plugin_protocol.Consumer": (
            pb.Consumer(id="c1", username="ann", tags=["t"]),
            {"id": "c1", "created_at": 0, "username": "ann", "custom_id": "", "tags": ["t"]},
        ),
    }
    if output in simple:
        return simple[output]
    if output == "kong_plugin_protocol.Route":
        return pb.Route(id="r1", paths=["/a"], service=pb.ServiceKey(id="s1")), {"id": "r1", "paths": ["/a"],
                                                                                  "service": {"id": "s1"}}
    if output == "kong_plugin_protocol.Service":
        return pb.Service(id="s1", host="h", port=80), {"id": "s1", "host": "h", "port": 80}
    if output == "kong_plugin_protocol.MemoryStats":
        vm = pb.MemoryStats.WorkerLuaVm(http_allocated_gc=5, pid=9)
        return pb.MemoryStats(workers_lua_vms=[vm]), {"workers_lua_vms": [{"http_allocated_gc": 5, "pid": 9}]}
    raise AssertionError(f"no sample answer for {output}")


def encoded_args(args: list[object]) -> str:
    return json.dumps({"list": [{"bytes": a.decode("latin-1")} if isinstance(a, bytes) else a for a in args]})


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_every_protobuf_function_round_trips(name: str, kong: tuple[KongPb, int], pb: ModuleType) -> None:
    conn, iid = kong
    table = methods(pb)
    method = table[name]
    args = call_args(BY_NAME[name])
    reply, expected = answer_for(pb, method.output_type.full_name)
    seen: list[Call] = []
    results: list[str] = []

    def answer(call: Call) -> Any:
        if call.name == "kong.request.get_header" and call.args.v in ("x-fn", "x-args"):
            return pb.String(v=name if call.args.v == "x-fn" else encoded_args(args))
        if call.name == "kong.response.set_header" and call.args.k == "x-result":
            results.append(call.args.v.string_value)
            return None
        seen.append(call)
        return reply

    conn.calls.clear()
    conn.event(iid, "access", answer)
    assert [c.name for c in seen] == [name]
    got = seen[0].args
    assert got.DESCRIPTOR is message_class(method.input_type).DESCRIPTOR
    if args and method.input_type.full_name != "google.protobuf.Empty":
        assert got.ListFields(), f"{name}: its arguments {args!r} did not reach the message"
    if BY_NAME[name]["terminal"]:
        assert results == []  # the handler ended at the call
        return
    value, err = eval(results[0])  # the plugin's repr() of its (value, err)
    assert err is None
    if isinstance(expected, dict) and method.output_type.full_name.endswith(("Route", "Service", "MemoryStats")):
        assert {k: value[k] for k in expected} == expected  # cut to the message's fields
    else:
        assert value == expected


def test_the_table_has_every_function_of_the_service(pb: ModuleType) -> None:
    assert sorted(methods(pb)) == SHORT_NAMES
