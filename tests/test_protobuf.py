"""ProtoBuf:1 over the real socket, driven as Kong's pb_rpc.lua drives it, with
the stock protobuf library on Kong's side (tests/pb_kong.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pb_kong import Call, KongPb, message_class, methods, pb2

from helpers import plugin_class
from serving import PLUGINS, Served

PLUGIN = "protobuf_plugin.py"

#: The execution models a ProtoBuf:1 plugin runs in: the same plugin with a
#: sync access and an async log (threads, the async phase on the connection's
#: own loop), every phase async def (the runner's asyncio loop owns the
#: socket), every phase plain def as greenlets (--model greenlets: the
#: GreenletRunner's loop owns it) and under -g (the gevent hub owns it).
MODELS = {
    "threads": ("protobuf_plugin.py",),
    "asyncio": ("protobuf_async.py",),
    "greenlets": ("protobuf_sync.py", "--model", "greenlets"),
    "gevent": ("protobuf_sync.py", "-g"),
}


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return pb2(str(tmp_path_factory.mktemp("pb2")))


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> tuple[str, ...]:
    if request.param == "gevent":
        pytest.importorskip("gevent", reason="the -g model needs gevent (make dev installs it)")
    return MODELS[request.param]


@pytest.fixture
def kong(
    pb: ModuleType, serve: Callable[..., Served], model: tuple[str, ...]
) -> Iterator[tuple[KongPb, Served]]:
    served = serve(*model)
    conn = KongPb.connect(pb, served.socket)
    yield conn, served
    conn.close()


def a_request(pb: ModuleType) -> Callable[[Call], Any]:
    """Kong's PDK for one request: host and headers, a body, the rest default."""
    from google.protobuf import struct_pb2

    def answer(call: Call) -> Any:
        if call.name == "kong.request.get_header":
            return pb.String(v={"host": "example.com"}.get(call.args.v, ""))
        if call.name == "kong.request.get_headers":
            headers = struct_pb2.Struct()
            headers.update({"host": "example.com", "accept": ["a/b", "c/d"]})
            return headers
        if call.name == "kong.request.get_raw_body":
            return pb.RawBodyResult(content=b"\xff body")
        if call.name == "kong.response.get_status":
            return pb.Int(v=200)
        return None

    return answer


def test_the_dump_says_protobuf_and_the_flag_overrides_the_attribute() -> None:
    def dump(*flags: str) -> Any:
        out = subprocess.run(
            [sys.executable, str(PLUGINS / PLUGIN), "--dump", *flags], capture_output=True, check=True
        )
        return json.loads(out.stdout)

    # Kong reads the wire from the dump's top-level Protocol only (its object form).
    as_protobuf = dump()
    assert as_protobuf["Protocol"] == "ProtoBuf:1"
    assert [p["Name"] for p in as_protobuf["Plugins"]] == ["protobuf_plugin"]
    assert "Protocol" not in as_protobuf["Plugins"][0]
    as_msgpack = dump("--protocol", "msgpack")
    assert isinstance(as_msgpack, list) and as_msgpack[0]["Name"] == "protobuf_plugin"


def test_an_event_makes_its_calls_on_its_connection(
    kong: tuple[KongPb, Served], pb: ModuleType, model: tuple[str, ...]
) -> None:
    conn, served = kong
    iid = conn.start("protobuf_plugin", '{"mode": "echo"}')
    assert iid > 0
    conn.event(iid, "access", a_request(pb))
    # The looped models serve the socket from the runner's loop: no thread
    # per connection (the thread model names its threads kong-pdk-pb).
    threads = {t.read_text().strip() for t in Path(f"/proc/{served.proc.pid}/task").glob("*/comm")}
    assert ("kong-pdk-pb" in threads) == (model == MODELS["threads"])
    names = [c.name for c in conn.calls]
    assert names == [
        "kong.request.get_header",
        "kong.request.get_headers",
        "kong.request.get_raw_body",
        "kong.response.set_header",
        "kong.response.set_header",
        "kong.response.set_header",
    ]
    # Headers came back as a dict of str or list; the body as a str (its
    # bytes kept with surrogateescape), as on MsgPack:1.
    sets = {c.args.k: c.args.v.string_value for c in conn.calls[3:]}
    assert sets == {"x-host": "example.com", "x-accept": "a/b,c/d,example.com", "x-body-type": "str"}
    # get_headers without a count sends go-pdk's 100 (Kong refuses 0).
    assert conn.calls[1].args.v == 100


def test_exit_sends_bytes_and_a_header_struct(kong: tuple[KongPb, Served], pb: ModuleType) -> None:
    conn, _ = kong
    iid = conn.start("protobuf_plugin", '{"mode": "exit"}')
    conn.event(iid, "access", a_request(pb))
    exit_call = conn.calls[-1]
    assert exit_call.name == "kong.response.exit"
    assert (exit_call.args.status, exit_call.args.body) == (403, b"denied")
    assert dict(exit_call.args.headers) == {"x-why": "pb"}


def test_a_call_protobuf_lacks_raises_at_the_call_site_and_sends_nothing(
    kong: tuple[KongPb, Served], pb: ModuleType
) -> None:
    conn, _ = kong
    iid = conn.start("protobuf_plugin", '{"mode": "lacking"}')
    conn.event(iid, "access", a_request(pb))
    names = [c.name for c in conn.calls]
    assert "kong.response.get_raw_body" not in names
    message = conn.calls[-1].args.values[0].string_value
    assert conn.calls[-1].name == "kong.log.err"
    assert "kong.response.get_raw_body is not available on ProtoBuf:1" in message
    assert "--protocol msgpack" in message


def test_a_handler_that_raises_fails_closed_and_the_connection_serves_on(
    kong: tuple[KongPb, Served], pb: ModuleType
) -> None:
    conn, served = kong
    iid = conn.start("protobuf_plugin", '{"mode": "raise"}')
    conn.event(iid, "access", a_request(pb))
    log_err, exit_call = conn.calls[-2:]
    assert log_err.name == "kong.log.err"
    assert "RuntimeError: boom" in log_err.args.values[0].string_value
    assert (exit_call.name, exit_call.args.status) == ("kong.response.exit", 500)
    served.wait_log("RuntimeError: boom")
    # The same connection carries the next event.
    conn.calls.clear()
    conn.event(iid, "access", a_request(pb))
    assert conn.calls[0].name == "kong.request.get_header"


def test_async_def_handlers_await_their_calls(kong: tuple[KongPb, Served], pb: ModuleType) -> None:
    conn, _ = kong
    iid = conn.start("protobuf_plugin")
    conn.event(iid, "log", a_request(pb))
    assert [c.name for c in conn.calls] == ["kong.response.get_status", "kong.log.notice"]
    assert [v.number_value for v in conn.calls[1].args.values[1:]] == [200]


def test_instance_commands(kong: tuple[KongPb, Served], pb: ModuleType) -> None:
    conn, _ = kong
    iid = conn.start("protobuf_plugin", '{"mode": "echo", "route_id": "r1"}')
    status = conn.call(cmd_get_instance_status=pb.CmdGetInstanceStatus(instance_id=iid)).instance_status
    assert (status.name, status.instance_id) == ("protobuf_plugin", iid)
    # Kong's bookkeeping keys are removed from the plugin's config, as on MsgPack:1.
    assert dict(status.config.struct_value) == {"mode": "echo"}
    info = conn.call(cmd_get_plugin_info=pb.CmdGetPluginInfo(name="protobuf_plugin")).plugin_info
    assert (info.name, list(info.phases), info.version, info.priority) == (
        "protobuf_plugin",
        ["access", "log"],
        "1.2.3",
        7,
    )
    assert json.loads(info.schema)["name"] == "protobuf_plugin"
    names = conn.call(cmd_get_plugin_names=pb.CmdGetPluginNames()).plugin_names
    assert list(names.names) == ["protobuf_plugin"]
    closed = conn.call(cmd_close_instance=pb.CmdCloseInstance(instance_id=iid)).instance_status
    assert closed.instance_id == iid


def test_an_unknown_instance_closes_the_connection_so_that_kong_restarts_it(
    kong: tuple[KongPb, Served], pb: ModuleType
) -> None:
    conn, served = kong
    with pytest.raises(ConnectionError):
        conn.event(12345, "access", a_request(pb))
    served.wait_log("no plugin instance #12345")
    # Kong then starts the instance again on a new connection, and the event runs.
    again = KongPb.connect(pb, served.socket)
    try:
        iid = again.start("protobuf_plugin")
        again.event(iid, "access", a_request(pb))
        assert again.calls
    finally:
        again.close()


def test_a_malformed_frame_is_answered_and_the_connection_serves_on(
    kong: tuple[KongPb, Served], pb: ModuleType
) -> None:
    import struct

    conn, served = kong
    conn.sock.sendall(struct.pack("=I", 3) + b"\xff\xff\xff")
    assert pb.RpcReturn.FromString(conn.read_frame()).sequence == 0
    served.wait_log("not an RpcCall")
    assert conn.start("protobuf_plugin") > 0


def test_the_method_table_is_kongs(pb: ModuleType) -> None:
    """Names derived from the .proto as Kong's Lua derives them are exactly
    the functions pdk-api.json marks (and the core's table, checked in Rust)."""
    from kong_pdk.protocol import protobuf_functions

    table = methods(pb)
    assert set(table) == set(protobuf_functions())
    assert len(table) == 74
    assert message_class(table["kong.request.get_headers"].output_type).DESCRIPTOR.full_name == (
        "google.protobuf.Struct"
    )


def test_worker_processes_and_async_def_under_gevent_are_refused(tmp_path: Path) -> None:
    for flag, why in (("-m", "speaks msgpack only"), ("-g", "cannot run under gevent")):
        out = subprocess.run(
            [sys.executable, str(PLUGINS / PLUGIN), "-p", str(tmp_path), flag],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert why in out.stderr, out.stderr


PB_PLAIN = """
    class Plugin:
        protocol = "protobuf"
        def access(self, kong):
            kong.response.set_header("x", "y")
"""
PB_MIXED = PB_PLAIN + """
        async def log(self, kong):
            await kong.log.notice("done")
"""
PB_ASYNC = """
    class Plugin:
        protocol = "protobuf"
        async def access(self, kong):
            await kong.response.set_header("x", "y")
"""


@pytest.mark.parametrize(
    ("source", "options", "expected"),
    [
        # A plugin known not to block runs as greenlets, as on MessagePack:1.
        (PB_PLAIN, {}, "greenlets"),
        (PB_PLAIN, {"model": "threads"}, "threads"),
        (PB_PLAIN, {"gevent": True}, "gevent"),
        (PB_ASYNC, {}, "asyncio"),
        # A connection's thread runs the async phase on its own loop: no bridge.
        (PB_MIXED, {}, "threads"),
        (PB_MIXED, {"model": "greenlets"}, "threads"),
    ],
)
def test_the_core_is_told_each_protobuf_model_by_name(
    tmp_path: Path, source: str, options: dict[str, object], expected: str
) -> None:
    from kong_pdk.serve import build_server

    if options.get("gevent"):
        pytest.importorskip("gevent", reason="the -g model needs gevent (make dev installs it)")
    cls = plugin_class(tmp_path, f"pb_choice_{expected}_{len(options)}", source)
    server = build_server("pb-choice", cls, str(tmp_path / "c.socket"), **options)  # type: ignore[arg-type]
    assert server.model == expected


def test_the_core_refuses_protobuf_with_processes_or_the_bridge(tmp_path: Path) -> None:
    from kong_pdk import _core

    with pytest.raises(ValueError, match="--protocol protobuf is served by .* not mixed"):
        _core.PluginServer([], str(tmp_path / "x.socket"), model="mixed", runner=object(), protocol="protobuf")
    with pytest.raises(ValueError, match="--protocol protobuf is served by .* not processes"):
        _core.PluginServer(
            [], str(tmp_path / "x.socket"), model="processes", workers=[(["x"], "/tmp/w")], protocol="protobuf"
        )


def test_a_replaced_server_closes_its_idle_connections_for_the_newer_one(
    pb: ModuleType, serve: Callable[..., Served], model: tuple[str, ...]
) -> None:
    old = serve(*model)
    idle = KongPb.connect(pb, old.socket)
    assert idle.start("protobuf_plugin") > 0
    new = serve(*model, "--take-over", prefix=old.prefix)
    new.wait_log("serving plugin")
    old.stop()  # SIGTERM: the old server sees the path is the newer one's
    # Kong's pool drops the closed connection; its next one reaches the newer server.
    idle.sock.settimeout(5)
    assert idle.sock.recv(1) == b""
    idle.close()
    assert old.proc.returncode == 0
    fresh = KongPb.connect(pb, new.socket)
    try:
        iid = fresh.start("protobuf_plugin")
        fresh.event(iid, "access", a_request(pb))
        assert fresh.calls[0].name == "kong.request.get_header"
    finally:
        fresh.close()
