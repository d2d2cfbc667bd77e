"""The HandleEvent/Step loop and the instance cache against a small real server (§5 – §7)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from kong_pdk.testing import NULL, KongEmulator, KongProtocolError, LuaError, LuaMulti, RpcError

from .emulator_peers import MiniPluginServer, PeerConn, Phase, ScriptedServer

Gen = Generator[tuple[str, Any], Any, None]


def hello(config: dict[str, Any]) -> Gen:
    host = yield ("kong.request.get_header", ["host"])
    yield ("kong.response.set_header", ["x-hello", f"{config.get('message')} {host}"])


def one_call(method: str, args: Any) -> Phase:
    def phase(config: dict[str, Any]) -> Gen:
        got = yield (method, args)
        yield ("kong.log.notice", [repr(got)])

    return phase


@pytest.fixture
def mini(sock_dir: Path) -> Iterator[MiniPluginServer]:
    server = MiniPluginServer(sock_dir / "mini.socket", {"access": hello})
    yield server
    server.close()
    assert not server.errors, server.errors


@pytest.fixture
def emu(mini: MiniPluginServer, kong_version: str) -> Iterator[KongEmulator]:
    with KongEmulator(mini.path, kong_version=kong_version, timeout=5) as emulator:
        yield emulator


def raw_of(mini: MiniPluginServer, method: str) -> list[bytes]:
    return [r.raw for r in mini.requests if r.method == method]


def test_event_bytes_match_protocol_4_3(mini: MiniPluginServer, emu: KongEmulator) -> None:
    iid = emu.start_instance("py-hello", {"message": "hi"})
    assert iid == 0
    result = emu.handle_event(iid, "access", {"kong.request.get_header": "example.com"})
    assert result.outcome == "ret"
    assert raw_of(mini, "plugin.HandleEvent") == [
        b"\x94\x00\x02\xb2plugin.HandleEvent\x91\x82\xaaInstanceId\x00\xa9EventName\xa6access"
    ]
    steps = raw_of(mini, "plugin.Step")
    assert steps[0] == b"\x94\x00\x03\xabplugin.Step\x91\x82\xa7EventId\x00\xa4Data\xabexample.com"
    # kong.response.set_header returns nil: the Step has no Data key (§4.3).
    assert steps[1] == b"\x94\x00\x04\xabplugin.Step\x91\x81\xa7EventId\x00"
    assert result.methods == ["kong.request.get_header", "kong.response.set_header"]
    assert result.calls[0].args == ("host",)
    assert result.calls[0].data == "example.com" and result.calls[0].has_data
    assert result.calls[1].args == ("x-hello", "hi example.com")
    assert not result.calls[1].has_data and result.calls[1].source == "default"
    assert len(result.rpc_seconds) == 3 and result.elapsed >= sum(result.rpc_seconds) * 0.5


def test_config_is_cjson_text_with_bookkeeping(mini: MiniPluginServer, emu: KongEmulator) -> None:
    emu.start_instance(
        "py-hello",
        {"message": "a/b", "list": [], "none": None},
        plugin_id="11111111-2222-3333-4444-555555555555",
        route_id="r-1",
    )
    params = mini.requests[0].params[0]
    assert set(params) == {"Name", "Config"}
    text = params["Config"]
    assert isinstance(text, str) and '"a\\/b"' in text
    assert mini.requests[0].raw[:40].count(b"\xd9") == 0
    config = json.loads(text)
    assert config["message"] == "a/b" and config["list"] == [] and "none" not in config
    assert config["route_id"] == "r-1" and "service_id" not in config
    assert config["__plugin_id"] == "11111111-2222-3333-4444-555555555555"
    # __seq__: a shared counter from 1 on 3.6+, a per-worker one from 0 before (§6.5).
    assert config["__seq__"] == (1 if emu.kong_version >= (3, 6) else 0)
    assert config["plugin_instance_name"] is None
    assert config["__key__"].startswith("plugins:py-hello:r-1:")
    assert ("__ws_id" in config) == (emu.kong_version >= (3, 9))


def test_config_bookkeeping_follows_the_kong_version(mini: MiniPluginServer) -> None:
    with KongEmulator(mini.path, kong_version=(2, 8), timeout=5) as old:
        old.start_instance("py-hello", {})
    config = json.loads(mini.requests[0].params[0]["Config"])
    assert config["__seq__"] == 0  # a per-worker counter from 0 before 3.6
    assert "__plugin_id" not in config and "__ws_id" not in config and "plugin_instance_name" not in config


def test_close_instance_sends_a_bare_id(mini: MiniPluginServer, emu: KongEmulator) -> None:
    iid = emu.start_instance("py-hello", {})
    emu.close_instance(iid)
    assert mini.closed_instances == [iid]
    assert raw_of(mini, "plugin.CloseInstance") == [b"\x94\x00\x02\xb4plugin.CloseInstance\x91\x00"]


@pytest.mark.parametrize(
    ("method", "answer", "step", "wire_data"),
    [
        ("kong.client.get_consumer", {"id": "c1", "custom_id": NULL}, "plugin.StepConsumer",
         b"\x82\xa2id\xa2c1\xa9custom_id\xc0"),
        ("kong.client.get_credential", {"id": "k"}, "plugin.StepCredential", b"\x81\xa2id\xa1k"),
        ("kong.node.get_memory_stats", {"workers_lua_vms": {}}, "plugin.StepMemoryStats",
         b"\x81\xafworkers_lua_vms\x90"),
        ("kong.router.get_route", {"id": "r"}, "plugin.StepRoute", b"\x81\xa2id\xa1r"),
        ("kong.router.get_service", {"id": "s"}, "plugin.StepService", b"\x81\xa2id\xa1s"),
        ("kong.request.get_headers", {"accept": "*/*", "x-flag": True}, "plugin.StepMultiMap",
         b"\x82\xa6accept\x91\xa3*/*\xa6x-flag\x90"),
        ("kong.request.get_query", {}, "plugin.StepMultiMap", b"\x80"),
        ("kong.response.get_headers", {"a": ["1", "2"]}, "plugin.StepMultiMap", b"\x81\xa1a\x92\xa11\xa12"),
        ("kong.service.response.get_headers", {"a": "1"}, "plugin.StepMultiMap", b"\x81\xa1a\x91\xa11"),
        ("kong.request.get_raw_body", b"\x00{}", "plugin.Step", b"\xc4\x03\x00{}"),
        ("kong.response.get_raw_body", "body", "plugin.Step", b"\xc4\x04body"),
        ("kong.service.response.get_raw_body", b"", "plugin.Step", b"\xc4\x00"),
        ("kong.request.get_body", {}, "plugin.Step", b"\x90"),
        ("kong.request.get_http_version", 2.0, "plugin.Step", b"\x02"),
        ("kong.request.get_http_version", 1.1, "plugin.Step", b"\xcb?\xf1\x99\x99\x99\x99\x99\x9a"),
        ("kong.log.serialize", {"a": "/"}, "plugin.Step", b'\xaa{"a":"\\/"}'),
        ("kong.client.get_ip", {"_method": "plugin.StepCustom", "v": 1}, "plugin.StepCustom",
         b"\x82\xa7_method\xb1plugin.StepCustom\xa1v\x01"),
        ("kong.ctx.shared.get", NULL, "plugin.Step", b"\xc0"),
        ("kong.request.get_header", False, "plugin.Step", b"\xc2"),
    ],
)
def test_step_method_and_data_per_pdk_function(
    sock_dir: Path, method: str, answer: Any, step: str, wire_data: bytes, kong_version: str
) -> None:
    server = MiniPluginServer(sock_dir / "m.socket", {"access": one_call(method, [])})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5, answers={method: answer}) as emu:
            result = emu.handle_event(emu.start_instance("p", {}), "access")
        step_req = [r for r in server.requests if r.method.startswith("plugin.Step")][0]
        assert step_req.method == step
        assert step_req.raw.endswith(b"\xa4Data" + wire_data)
        assert result.calls[0].step_method == step
    finally:
        server.close()
    assert not server.errors


def test_nil_result_of_a_typed_function_keeps_its_step_method_without_data(sock_dir: Path, kong_version: str) -> None:
    server = MiniPluginServer(sock_dir / "m.socket", {"access": one_call("kong.client.get_consumer", [])})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            emu.handle_event(emu.start_instance("p", {}), "access")
        step_req = [r for r in server.requests if r.method.startswith("plugin.Step")][0]
        assert step_req.method == "plugin.StepConsumer"
        assert step_req.params == [{"EventId": 0}]
    finally:
        server.close()


def test_kong_2_8_sends_step_error_and_str_bodies(sock_dir: Path) -> None:
    def phase(config: dict[str, Any]) -> Gen:
        yield ("kong.request.get_header", ["x-missing"])
        yield ("kong.request.get_raw_body", [])

    server = MiniPluginServer(sock_dir / "m.socket", {"access": phase})
    answers = {"kong.request.get_header": LuaMulti(None, "not found"), "kong.request.get_raw_body": b"raw"}
    try:
        with KongEmulator(server.path, timeout=5, kong_version=(2, 8), answers=answers) as emu:
            result = emu.handle_event(emu.start_instance("p", {}), "access")
        steps = [r for r in server.requests if r.method.startswith("plugin.Step")]
        assert steps[0].method == "plugin.StepError" and steps[0].params == [{"EventId": 0, "Data": "not found"}]
        assert steps[1].raw.endswith(b"\xa4Data\xa3raw")  # str before 3.0 (§6.2)
        assert result.calls[0].returns == (None, "not found")
    finally:
        server.close()


def test_kong_3_keeps_only_the_first_return_value(sock_dir: Path, kong_version: str) -> None:
    server = MiniPluginServer(sock_dir / "m.socket", {"access": one_call("kong.request.get_header", ["x"])})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            emu.handle_event(
                emu.start_instance("p", {}), "access", {"kong.request.get_header": LuaMulti(None, "not found")}
            )
        assert "plugin.StepError" not in server.methods()
        step = [r for r in server.requests if r.method == "plugin.Step"][0]
        assert step.params == [{"EventId": 0}]
    finally:
        server.close()


@pytest.mark.parametrize(
    ("args", "seen"),
    [
        ([403, None, {"x-a": "1"}], (403,)),  # §11.2: the nil cuts the headers away
        ([403, "denied", {"x-why": "nope"}], (403, "denied", {"x-why": "nope"})),
        ({"status": 403}, ()),  # a map: no arguments
        (403, (403,)),  # not a table: the single argument
    ],
)
def test_terminal_calls_end_the_event_with_luas_arguments(
    sock_dir: Path, args: Any, seen: tuple[Any, ...], kong_version: str
) -> None:
    def phase(config: dict[str, Any]) -> Gen:
        yield ("kong.response.exit", args)
        yield ("kong.log.err", ["must never be seen"])

    server = MiniPluginServer(sock_dir / "m.socket", {"access": phase})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            result = emu.handle_event(emu.start_instance("p", {}), "access")
            time.sleep(0.1)
        assert result.outcome == "exit"
        assert result.calls[0].args == seen and result.calls[0].terminal
        assert result.terminal is not None and result.status == (seen[0] if seen else None)
        if len(seen) < 3:
            assert result.headers is None
        assert server.methods() == ["plugin.StartInstance", "plugin.HandleEvent"]  # nothing after exit
    finally:
        server.close()


def test_response_error_is_terminal_too(sock_dir: Path, kong_version: str) -> None:
    server = MiniPluginServer(sock_dir / "m.socket", {"access": one_call("kong.response.error", [500, "boom"])})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            result = emu.handle_event(emu.start_instance("p", {}), "access")
        assert result.outcome == "error" and result.status == 500 and result.body == "boom"
        assert not any(m.startswith("plugin.Step") for m in server.methods())
    finally:
        server.close()


def test_unknown_method_is_logged_and_answered_with_plain_step(sock_dir: Path, kong_version: str) -> None:
    server = MiniPluginServer(sock_dir / "m.socket", {"access": one_call("kong.nginx.shared.get", ["k"])})
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            result = emu.handle_event(emu.start_instance("p", {}), "access")
            assert any("could not find pdk method" in line for line in emu.log)
        assert result.unknown_methods == ["kong.nginx.shared.get"]
        step = [r for r in server.requests if r.method.startswith("plugin.Step")][0]
        assert step.method == "plugin.Step" and step.params == [{"EventId": 0}]
        assert result.outcome == "ret"
    finally:
        server.close()


def test_callable_answers_get_luas_arguments_and_overrides_win(mini: MiniPluginServer, kong_version: str) -> None:
    seen: list[tuple[Any, ...]] = []

    def header(*args: Any) -> str:
        seen.append(args)
        return "callable.example"

    answers = {"kong.request.get_header": "table.example"}
    with KongEmulator(mini.path, kong_version=kong_version, timeout=5, answers=answers) as emu:
        iid = emu.start_instance("p", {"message": "m"})
        assert emu.handle_event(iid, "access").calls[1].args == ("x-hello", "m table.example")
        result = emu.handle_event(iid, "access", {"kong.request.get_header": header})
    assert seen == [("host",)]
    assert result.calls[1].args == ("x-hello", "m callable.example")


def test_lua_error_abandons_the_event(mini: MiniPluginServer, emu: KongEmulator) -> None:
    def boom(*args: Any) -> Any:
        raise LuaError("headers already sent")

    result = emu.handle_event(emu.start_instance("p", {}), "access", {"kong.request.get_header": boom})
    assert result.outcome == "lua_error" and result.lua_error == "headers already sent"
    assert not any(m.startswith("plugin.Step") for m in mini.methods())


def test_rpc_error_during_event_carries_the_partial_result(mini: MiniPluginServer, emu: KongEmulator) -> None:
    with pytest.raises(RpcError) as info:
        emu.handle_event(99, "access")
    assert info.value.is_no_plugin_instance
    assert info.value.partial is not None and info.value.partial.calls == []


# -- run_phase: Kong's instance cache (§7) ---------------------------------------------------


def test_run_phase_starts_once_and_reuses_the_id(mini: MiniPluginServer, emu: KongEmulator) -> None:
    for _ in range(3):
        assert emu.run_phase("py-hello", {"message": "x"}, "access").outcome == "ret"
    assert mini.methods().count("plugin.StartInstance") == 1


def test_config_change_starts_new_then_closes_old(mini: MiniPluginServer, emu: KongEmulator) -> None:
    emu.run_phase("py-hello", {"message": "v1"}, "access")
    emu.run_phase("py-hello", {"message": "v2"}, "access")
    methods = mini.methods()
    second_start = [i for i, m in enumerate(methods) if m == "plugin.StartInstance"][1]
    assert methods[second_start + 1] == "plugin.CloseInstance"
    assert mini.closed_instances == [0]
    seqs = [json.loads(r.params[0]["Config"])["__seq__"] for r in mini.requests if r.method == "plugin.StartInstance"]
    assert seqs == ([1, 2] if emu.kong_version >= (3, 6) else [0, 1])


def test_no_plugin_instance_forgets_and_retries(mini: MiniPluginServer, emu: KongEmulator) -> None:
    emu.run_phase("py-hello", {}, "access")
    mini.instances.clear()  # as after a server restart
    result = emu.run_phase("py-hello", {}, "access")
    assert result.outcome == "ret"
    assert mini.methods().count("plugin.StartInstance") == 2
    assert "plugin.CloseInstance" not in mini.methods()  # Kong never closes forgotten ids


# Three plugin rows on one server socket: two of py-hello, one of another plugin.
ROWS = (("py-hello", "row-a"), ("py-hello", "row-b"), ("other", "row-c"))


@pytest.mark.parametrize(
    ("version", "kept"),
    [
        ("3.4", {"row-b", "row-c"}),  # reset_instance: that row only
        ("3.5", set()),  # every instance on the same server (RPC object)
        ("3.6", {"row-c"}),  # reset_instances_for_plugin: every row of the plugin
        ("3.9.3", {"row-c"}),
    ],
)
def test_no_plugin_instance_forgets_what_each_kong_version_forgets(
    mini: MiniPluginServer, version: str, kept: set[str]
) -> None:
    with KongEmulator(mini.path, kong_version=version, timeout=5) as emu:
        for name, row in ROWS:
            emu.run_phase(name, {}, "access", plugin_id=row)
        lost = emu.instances.get("row-a")
        assert lost is not None
        mini.instances.pop(lost.instance_id)  # the server no longer knows row-a's instance
        assert emu.run_phase("py-hello", {}, "access", plugin_id="row-a").outcome == "ret"
        assert set(emu.instances.snapshot()) == kept | {"row-a"}  # row-a was started again
        assert any("no plugin instance" in line for line in emu.log)


def test_other_errors_reset_instances_only_on_3_5_and_3_6(sock_dir: Path, kong_version: str) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            if req.method == "plugin.StartInstance":
                conn.reply(req.msgid, None, {"Id": 7})
            else:
                conn.reply(req.msgid, "boom", None)

    server = ScriptedServer(sock_dir / "s.socket", script)
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            with pytest.raises(RpcError, match="boom"):
                emu.run_phase("p", {}, "access")
            forgotten = not emu.instances.snapshot()
            assert forgotten == (kong_version == "3.6")  # 3.5 - 3.6 post the reset on any error
    finally:
        server.close()


def test_no_plugin_instance_retries_are_bounded(sock_dir: Path, kong_version: str) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            if req.method == "plugin.StartInstance":
                conn.reply(req.msgid, None, {"Id": 5})
            else:
                conn.reply(req.msgid, "NO PLUGIN INSTANCE #5 (really)", None)

    server = ScriptedServer(sock_dir / "s.socket", script)
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5, max_phase_tries=3) as emu:
            with pytest.raises(RpcError, match="NO PLUGIN INSTANCE"):
                emu.run_phase("p", {}, "access")
    finally:
        server.close()


def test_pid_change_forgets_cached_instances(mini: MiniPluginServer, emu: KongEmulator) -> None:
    mini.notify_pid = 100
    emu.run_phase("py-hello", {}, "access")
    emu.run_phase("py-hello", {}, "access")
    mini.notify_pid = 200
    emu.run_phase("py-hello", {}, "access")  # the reply's pid change drops the cache
    emu.run_phase("py-hello", {}, "access")
    assert mini.methods().count("plugin.StartInstance") == 2
    assert emu.server_pid == 200


# -- server mistakes in the event loop -----------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [{"EventId": 0}, {"Data": "done", "EventId": 0}, {"Data": {"Args": []}, "EventId": 0}, 5],
)
def test_malformed_event_replies_are_lua_errors(sock_dir: Path, result: Any, kong_version: str) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([1, req.msgid, None, result]))

    server = ScriptedServer(sock_dir / "s.socket", script)
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu, pytest.raises(KongProtocolError):
            emu.handle_event(0, "access")
    finally:
        server.close()


def test_nil_result_ends_the_event_as_success(sock_dir: Path, kong_version: str) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([1, req.msgid, None, None]))

    server = ScriptedServer(sock_dir / "s.socket", script)
    try:
        with KongEmulator(server.path, kong_version=kong_version, timeout=5) as emu:
            result = emu.handle_event(0, "access")
        assert result.outcome == "ret" and result.nil_reply
    finally:
        server.close()


# -- concurrency ---------------------------------------------------------------------------------


def test_64_concurrent_events_from_64_threads(mini: MiniPluginServer, emu: KongEmulator) -> None:
    iid = emu.start_instance("py-hello", {"message": "hi"})
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def drive(n: int) -> None:
        try:
            start.wait(timeout=10)
            results[n] = emu.handle_event(iid, "access", {"kong.request.get_header": f"h{n}.example"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(results) == 64
    for n, result in results.items():
        assert result.outcome == "ret"
        assert result.calls[1].args == ("x-hello", f"hi h{n}.example")
    msgids = [r.msgid for r in mini.requests]
    assert sorted(msgids) == list(range(1, len(msgids) + 1))  # one counter, no duplicates
    assert len({r.conn_no for r in mini.requests}) == emu.connections_opened <= 64
    assert emu.discarded_bytes == 0
