"""The emulator's connection handling against scripted peers: bytes, reading, pool (§2, §3)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from kong_pdk.testing import KongEmulator, KongProtocolError, RpcError, TransportError

from .emulator_peers import PeerConn, ScriptedServer

Script = Callable[[PeerConn], None]


@pytest.fixture
def serve(sock_dir: Path, kong_version: str) -> Iterator[Callable[[Script], KongEmulator]]:
    servers: list[ScriptedServer] = []
    emulators: list[KongEmulator] = []

    def start(script: Script) -> KongEmulator:
        path = sock_dir / f"s{len(servers)}.socket"
        servers.append(ScriptedServer(path, script))
        emu = KongEmulator(path, kong_version=kong_version, timeout=5)
        emulators.append(emu)
        return emu

    yield start
    for emu in emulators:
        emu.close()
    for server in servers:
        server.close()
        assert not server.errors, server.errors


def echo_ok(conn: PeerConn) -> None:
    while (req := conn.read_request()) is not None:
        conn.reply(req.msgid, None, {"method": req.method, "raw": req.raw})


def test_requests_are_packed_as_kong_does_and_msgids_count_from_1(
    serve: Callable[[Script], KongEmulator],
) -> None:
    emu = serve(echo_ok)
    first = emu.call("plugin.GetStatus", [])
    second = emu.call("plugin.CloseInstance", [0])
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["raw"] == b"\x94\x00\x01\xb0plugin.GetStatus\x90"
    assert second["raw"] == b"\x94\x00\x02\xb4plugin.CloseInstance\x91\x00"


def test_pool_reuses_one_connection_for_sequential_calls(serve: Callable[[Script], KongEmulator]) -> None:
    emu = serve(echo_ok)
    for _ in range(5):
        emu.call("plugin.GetStatus", [])
    assert emu.connections_opened == 1
    assert emu.rpc.pool.idle_count() == 1


def test_pool_keeps_at_most_pool_size_idle_connections(sock_dir: Path, kong_version: str) -> None:
    gate = threading.Barrier(4)

    def slow(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            gate.wait(timeout=5)  # all four calls are in flight at once
            conn.reply(req.msgid, None, "ok")

    server = ScriptedServer(sock_dir / "p.socket", slow)
    try:
        with KongEmulator(sock_dir / "p.socket", kong_version=kong_version, pool_size=2, timeout=5) as emu:
            threads = [threading.Thread(target=emu.call, args=("plugin.GetStatus", [])) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=10)
            assert emu.connections_opened == 4
            assert emu.rpc.pool.idle_count() == 2
    finally:
        server.close()
    assert not server.errors


def test_notifications_before_the_reply_are_accepted(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([2, "serverPid", 4242]) + msgpack.packb([2, "whatever", [1]]))
            conn.reply(req.msgid, None, "ok")

    emu = serve(script)
    assert emu.call("plugin.GetStatus", []) == "ok"
    assert [n.label for n in emu.notifications] == ["serverPid", "whatever"]
    assert emu.server_pid == 4242
    assert emu.discarded_bytes == 0


def test_numeric_string_pid_is_the_same_pid(serve: Callable[[Script], KongEmulator]) -> None:
    pids = iter([4242, "4242"])

    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([2, "serverPid", next(pids)]))
            conn.reply(req.msgid, None, "ok")

    emu = serve(script)
    emu.call("plugin.GetStatus", [])
    emu.call("plugin.GetStatus", [])
    assert not any("pid changed" in line for line in emu.log)


def test_bytes_after_the_reply_are_discarded_and_counted(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            # One write: the reply, a late notification and 3 stray bytes (§2: all dropped).
            conn.send(msgpack.packb([1, req.msgid, None, "ok"]) + msgpack.packb([2, "serverPid", 1]) + b"xyz")

    emu = serve(script)
    assert emu.call("plugin.GetStatus", []) == "ok"
    assert emu.discarded_bytes == len(msgpack.packb([2, "serverPid", 1])) + 3
    assert emu.notifications == []  # a notification after the reply is never seen


def test_late_bytes_on_an_idle_connection_are_counted_and_drop_it(
    serve: Callable[[Script], KongEmulator],
) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.reply(req.msgid, None, "ok")
            time.sleep(0.05)
            conn.send(b"\x01\x02")  # a separate, late write

    emu = serve(script)
    emu.call("plugin.GetStatus", [])
    time.sleep(0.3)
    assert emu.call("plugin.GetStatus", []) == "ok"
    assert emu.discarded_bytes == 2
    assert emu.connections_opened == 2


def test_reply_split_in_tiny_pieces_is_reassembled(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            data = msgpack.packb([1, req.msgid, None, {"big": "z" * 10000}])
            for i in range(0, len(data), 7):
                conn.send(data[i : i + 7])

    emu = serve(script)
    assert emu.call("plugin.GetStatus", []) == {"big": "z" * 10000}


def test_error_reply_raises_rpc_error_and_keeps_the_connection(
    serve: Callable[[Script], KongEmulator],
) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.reply(req.msgid, "No Plugin Instance #7", None)

    emu = serve(script)
    with pytest.raises(RpcError) as info:
        emu.call("plugin.HandleEvent", [{"InstanceId": 7, "EventName": "access"}])
    assert info.value.message == "No Plugin Instance #7"
    assert info.value.is_no_plugin_instance
    assert emu.rpc.pool.idle_count() == 1


def test_bin_error_is_a_lua_string_too(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([1, req.msgid, b"bad \xff", None], use_bin_type=True))

    emu = serve(script)
    with pytest.raises(RpcError) as info:
        emu.call("plugin.GetStatus", [])
    assert info.value.message.encode("utf-8", "surrogateescape") == b"bad \xff"


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (lambda msgid: [1, msgid + 1, None, "ok"], "msgid"),
        (lambda msgid: [0, msgid, None, "ok"], "type"),
        (lambda msgid: [True, msgid, None, "ok"], "type"),
        (lambda msgid: [1, msgid, {"code": 1}, None], "string"),
        (lambda msgid: [1, msgid, ["oops"], None], "string"),
        (lambda msgid: {"msgid": msgid}, "not an array"),
    ],
)
def test_violations_of_kongs_asserts_raise_protocol_errors(
    serve: Callable[[Script], KongEmulator],
    reply: Callable[[int], object],
    complaint: str,
) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb(reply(req.msgid)))

    emu = serve(script)
    with pytest.raises(KongProtocolError, match=complaint):
        emu.call("plugin.GetStatus", [])
    assert emu.rpc.pool.idle_count() == 0  # the broken connection is not reused


def test_undecodable_bytes_raise_protocol_errors(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while conn.read_request() is not None:
            conn.send(b"\xc1")

    emu = serve(script)
    with pytest.raises(KongProtocolError, match="cannot decode"):
        emu.call("plugin.GetStatus", [])


def test_ext_types_raise_protocol_errors(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        while (req := conn.read_request()) is not None:
            conn.send(msgpack.packb([1, req.msgid, None, msgpack.ExtType(5, b"x")]))

    emu = serve(script)
    with pytest.raises(KongProtocolError, match="ext type"):
        emu.call("plugin.GetStatus", [])


def test_server_closing_mid_call_is_a_transport_error(serve: Callable[[Script], KongEmulator]) -> None:
    def script(conn: PeerConn) -> None:
        conn.read_request()
        conn.sock.shutdown(socket.SHUT_RDWR)

    emu = serve(script)
    with pytest.raises(TransportError, match="closed"):
        emu.call("plugin.GetStatus", [])


def test_missing_socket_is_a_transport_error(sock_dir: Path, kong_version: str) -> None:
    with (
        KongEmulator(sock_dir / "absent.socket", kong_version=kong_version) as emu,
        pytest.raises(TransportError, match="connect"),
    ):
        emu.call("plugin.GetStatus", [])


def test_raw_connection_sends_hand_made_bytes(serve: Callable[[Script], KongEmulator]) -> None:
    seen: list[bytes] = []

    def script(conn: PeerConn) -> None:
        first = conn.sock.recv(1)
        seen.append(first)
        conn.reply(0, "bad frame", None)
        while (req := conn.read_request()) is not None:
            conn.reply(req.msgid, None, "fine")

    emu = serve(script)
    with emu.connection() as c:
        c.send_raw(b"\xc1")
        reply = c.read_reply()
        assert reply.error == "bad frame" and reply.msgid == 0
        assert c.call("plugin.GetStatus", []) == "fine"
    assert seen == [b"\xc1"]
