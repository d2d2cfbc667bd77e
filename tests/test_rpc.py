"""The RPC surface: every plugin.* method, bad input, and what Kong relies on
(protocol.md §2–§4, §7, §10)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import msgpack
import pytest

from kong_pdk.testing import KongEmulator, RpcError

from helpers import case, status
from serving import Served


@pytest.fixture(params=["thread", "gevent"])
def server(request: pytest.FixtureRequest, serve: Callable[..., Served]) -> Served:
    # Under -g the gevent hub owns the socket (src/models/looped/): the same RPC
    # surface, served by the loop's thread instead of the core's I/O threads.
    extra: tuple[str, ...] = ()
    if request.param == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
        extra = ("-g",)
    return serve("behaviours.py", "--max-message-size", "100000", *extra)


@pytest.fixture
def emu(server: Served) -> Iterator[KongEmulator]:
    with KongEmulator(server.socket) as e:
        yield e


def test_malformed_frame_then_good_request_on_the_same_connection(
    server: Served, emu: KongEmulator
) -> None:
    with emu.connection() as conn:
        conn.send_raw(b"\x94\x00\x07\xc1")  # 0xc1 is never valid MessagePack
        bad = conn.read_reply()
        assert bad.error is not None and "malformed" in bad.error
        assert bad.msgid == 7
        good = conn.call("plugin.GetStatus", [])
        assert isinstance(good, dict) and good["Pid"] == server.proc.pid
    assert "malformed" in server.log()


def test_request_of_the_wrong_shape_gets_an_error_reply(emu: KongEmulator) -> None:
    with emu.connection() as conn:
        conn.send_raw(msgpack.packb([0, 3]))
        reply = conn.read_reply()
        assert reply.msgid == 3 and reply.error is not None and "malformed request" in reply.error
        conn.send_raw(msgpack.packb("just a string"))
        assert "malformed request" in str(conn.read_reply().error)
        assert isinstance(conn.call("plugin.GetStatus", []), dict)


def test_unknown_method_then_good_request(emu: KongEmulator) -> None:
    with emu.connection() as conn:
        reply = conn.exchange("plugin.NoSuchThing", [])
        assert reply.error == "method plugin.NoSuchThing not implemented"
        reply = conn.exchange("other.StartInstance", [])
        assert reply.error == "RPC for other is not supported"
        assert isinstance(conn.call("plugin.GetStatus", []), dict)


def test_step_for_an_unknown_event(emu: KongEmulator) -> None:
    with pytest.raises(RpcError) as err:
        emu.call("plugin.Step", [{"EventId": 424242, "Data": "x"}])
    assert "424242" in err.value.message
    assert not err.value.is_no_plugin_instance


def test_close_instance_then_handle_event_says_no_plugin_instance(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    closed = emu.call("plugin.CloseInstance", [iid])
    assert isinstance(closed, dict) and closed["Id"] == iid
    with pytest.raises(RpcError) as err:
        emu.handle_event(iid, "access", answers=case("plain"))
    assert err.value.message == f"no plugin instance #{iid}"
    with pytest.raises(RpcError) as err:
        emu.call("plugin.InstanceStatus", [iid])
    assert err.value.is_no_plugin_instance


def test_kong_recovers_from_a_lost_instance_by_starting_it_again(emu: KongEmulator) -> None:
    first = emu.run_phase("behaviours", {"message": "x"}, "access", answers=case("plain"))
    (old_id,) = {first.instance_id}
    emu.call("plugin.CloseInstance", [old_id])
    again = emu.run_phase("behaviours", {"message": "x"}, "access", answers=case("plain"))
    assert again.outcome == "ret" and again.instance_id != old_id
    assert any("no plugin instance" in line for line in emu.log)


def test_start_instance_of_another_plugin_or_a_refused_config(server: Served, emu: KongEmulator) -> None:
    with pytest.raises(RpcError) as err:
        emu.start_instance("someone-else", {})
    assert "no plugin named 'someone-else'" in err.value.message
    with pytest.raises(RpcError) as err:
        emu.start_instance("behaviours", {"message": "refuse"})
    assert err.value.message.startswith("starting instance: ValueError: this config is refused")
    assert "Traceback" in server.wait_log("this config is refused")


def test_handle_event_for_a_phase_the_plugin_lacks(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    with pytest.raises(RpcError) as err:
        emu.handle_event(iid, "certificate")
    assert "no handler for phase 'certificate'" in err.value.message


def test_get_plugin_info_and_status(server: Served, emu: KongEmulator) -> None:
    info = emu.call("plugin.GetPluginInfo", ["behaviours"])
    assert isinstance(info, dict)
    assert (info["Name"], info["Priority"], info["Version"]) == ("behaviours", 10, "1.2.3")
    iid = emu.start_instance("behaviours", {"message": "s"})
    st = status(emu)
    assert st["Pid"] == server.proc.pid
    plugin = st["Plugins"]["behaviours"]
    assert [i["Id"] for i in plugin["Instances"]] == [iid]
    assert plugin["LastStartInstance"] is not None


def test_server_pid_notification_precedes_the_first_reply_of_each_connection(
    server: Served, emu: KongEmulator
) -> None:
    def messages(conn: object, msgid: int, count: int) -> list[object]:
        conn.send_request("plugin.GetStatus", [], msgid=msgid)  # type: ignore[attr-defined]
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        got: list[object] = []
        while len(got) < count:
            unpacker.feed(conn.recv_raw(timeout=5))  # type: ignore[attr-defined]
            got.extend(unpacker)
        return got

    for _ in range(2):
        with emu.connection() as conn:
            first = messages(conn, 1, 2)
            assert first[0] == [2, "serverPid", server.proc.pid]
            assert first[1][:3] == [1, 1, None]  # type: ignore[index]
            second = messages(conn, 2, 1)
            assert len(second) == 1 and second[0][:3] == [1, 2, None]  # type: ignore[index]


def test_huge_message_gets_an_error_and_the_server_goes_on(server: Served, emu: KongEmulator) -> None:
    with emu.connection() as conn:
        conn.send_raw(msgpack.packb([0, 9, "plugin.Step", [{"EventId": 1, "Data": "x" * 200_000}]]))
        reply = conn.read_reply()
        assert reply.msgid == 9 and "too large" in str(reply.error)
        try:  # and the connection is closed (a reset, as unread bytes were pending)
            assert conn.recv_raw(timeout=5) == b""
        except ConnectionResetError:
            pass
    assert isinstance(emu.call("plugin.GetStatus", []), dict)


def test_probe_connections_that_close_at_once_are_harmless(server: Served, emu: KongEmulator) -> None:
    # Kong 3.1 - 3.4 probes readiness by connecting and closing (protocol.md §1.3).
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.socket)
        s.close()
    half = socket.socket(socket.AF_UNIX)
    half.connect(server.socket)
    half.sendall(msgpack.packb([0, 1, "plugin.GetStatus", []])[:5])
    half.close()
    assert isinstance(emu.call("plugin.GetStatus", []), dict)


@pytest.mark.parametrize("model", [(), ("-g",)], ids=["thread", "gevent"])
def test_client_hanging_up_mid_event_does_not_hurt_others(serve: Callable[..., Served], model: tuple[str, ...]) -> None:
    if model:
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    served = serve("behaviours.py", "--event-timeout", "0.5", *model)
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        s = socket.socket(socket.AF_UNIX)
        s.connect(served.socket)
        s.sendall(msgpack.packb([0, 1, "plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}]]))
        s.close()  # gone before reading the reply
        assert emu.handle_event(iid, "access", answers=case("plain")).outcome == "ret"
        # The orphaned event is reclaimed by the deadline.
        served.wait_log("abandoned")
        from helpers import wait_idle

        assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_nothing_is_written_after_a_reply(emu: KongEmulator) -> None:
    for name in ["plain", "exit", "raise", "log-anything"]:
        emu.run_phase("behaviours", {}, "access", answers=case(name))
    emu.call("plugin.GetStatus", [])
    assert emu.discarded_bytes == 0


def test_empty_array_is_accepted_where_a_map_is_expected(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    with emu.connection() as conn:
        first = conn.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        # {"EventId": n, "Data": {}} as Lua encodes it: the empty table is [].
        step = conn.call("plugin.Step", [{"EventId": first["EventId"], "Data": []}])
        assert isinstance(step, dict) and step["Data"]["Method"] == "kong.response.set_header"
        done = conn.call("plugin.Step", [{"EventId": float(first["EventId"])}])  # integral float id
        assert done == {"Data": "ret", "EventId": first["EventId"]}
