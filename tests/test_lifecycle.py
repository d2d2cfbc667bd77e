"""Concurrency, deadlines, expiry, restarts, shutdown and leaks (protocol.md §1.3, §2, §5.2.5, §7)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import pytest

from kong_pdk.testing import KongEmulator, RpcError

from helpers import case, status, wait_idle
from serving import PLUGINS, Served

# The models whose lifecycle is served differently: threads (the core's I/O
# threads serve the socket) and the looped model, where the event loop's
# thread does (all-async plugins, and -g).
LIFECYCLE_MODELS = {
    "thread": ("behaviours.py", ()),
    "asyncio": ("behaviours_async.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
}


@pytest.fixture(params=list(LIFECYCLE_MODELS))
def model(request: pytest.FixtureRequest) -> tuple[str, tuple[str, ...]]:
    """The plugin file and extra flags of one execution model."""
    if request.param == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    return LIFECYCLE_MODELS[request.param]


def test_64_events_in_flight_on_64_connections_all_progress(serve: Callable[..., Served]) -> None:
    served = serve("behaviours.py")
    n = 64
    # Every event's first PDK call is answered only once all 64 are waiting at
    # the same time: a server that serialised events would break the barrier.
    barrier = threading.Barrier(n, timeout=30)

    def get_header(name: str) -> object:
        if name == "x-step-0":
            barrier.wait()
        return {"x-case": "wait"}.get(name)

    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        with ThreadPoolExecutor(n) as pool:
            results = list(
                pool.map(
                    lambda _: emu.handle_event(iid, "access", answers={"kong.request.get_header": get_header}),
                    range(n),
                )
            )
        assert not barrier.broken
        assert all(r.outcome == "ret" and len(r.calls) == 4 for r in results)
        assert len({r.event_id for r in results}) == n
        assert emu.connections_opened >= n
        assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_abandoned_event_is_reclaimed_and_its_handler_unwinds(serve: Callable[..., Served]) -> None:
    served = serve("behaviours.py", "--event-timeout", "0.5")
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        eid = first["EventId"]
        second = emu.call("plugin.Step", [{"EventId": eid, "Data": "abandon"}])
        assert isinstance(second, dict) and second["Data"]["Args"] == ["x-never-answered"]
        # Kong never sends the next Step.
        served.wait_log(f"event {eid}")
        served.wait_log("abandoned")
        assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}
        with pytest.raises(RpcError):
            emu.call("plugin.Step", [{"EventId": eid, "Data": "late"}])
        # The instance is still usable.
        assert emu.handle_event(iid, "access", answers=case("plain")).outcome == "ret"


def test_idle_instances_expire_and_kong_recovers(
    serve: Callable[..., Served], model: tuple[str, tuple[str, ...]]
) -> None:
    served = serve(model[0], "--instance-ttl", "0.3", *model[1], name="behaviours")
    with KongEmulator(served.socket) as emu:
        first = emu.run_phase("behaviours", {}, "access", answers=case("plain"))
        deadline = time.monotonic() + 10
        while status(emu)["Plugins"]["behaviours"]["Instances"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status(emu)["Plugins"]["behaviours"]["Instances"] == []
        served.wait_log("expired")
        again = emu.run_phase("behaviours", {}, "access", answers=case("plain"))
        assert again.outcome == "ret" and again.instance_id != first.instance_id


def test_an_instance_with_an_event_in_flight_never_expires(
    serve: Callable[..., Served], model: tuple[str, tuple[str, ...]]
) -> None:
    served = serve(model[0], "--instance-ttl", "0.1", *model[1], name="behaviours")
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        time.sleep(0.6)
        assert [i["Id"] for i in status(emu)["Plugins"]["behaviours"]["Instances"]] == [iid]
        done = emu.call("plugin.Step", [{"EventId": first["EventId"], "Data": "plain"}])
        assert isinstance(done, dict)
        emu.call("plugin.Step", [{"EventId": first["EventId"]}])


def test_ids_are_never_reused_across_restarts(serve: Callable[..., Served]) -> None:
    first = serve("behaviours.py", name="restart")
    with KongEmulator(first.socket) as emu:
        old = emu.start_instance("behaviours", {"message": "old"})
    assert first.stop() == 0
    second = serve("behaviours.py", name="restart")
    with KongEmulator(second.socket) as emu:
        new = emu.start_instance("behaviours", {"message": "new"})
        assert new > old
        # Kong still holding the old id gets the recovery error, never another config.
        with pytest.raises(RpcError) as err:
            emu.handle_event(old, "access", answers=case("config"))
        assert err.value.is_no_plugin_instance


def test_sigterm_drains_events_in_flight_then_removes_the_socket(
    serve: Callable[..., Served], model: tuple[str, tuple[str, ...]]
) -> None:
    served = serve(model[0], *model[1], name="behaviours")
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        served.proc.send_signal(signal.SIGTERM)
        served.wait_log("draining")
        # New work is refused while draining ...
        with pytest.raises(RpcError) as err:
            emu.handle_event(iid, "access")
        assert "shutting down" in err.value.message
        # ... but the event in flight finishes, on a new connection too.
        with emu.connection() as conn:
            step = conn.call("plugin.Step", [{"EventId": first["EventId"], "Data": "plain"}])
            assert isinstance(step, dict)
            assert conn.call("plugin.Step", [{"EventId": first["EventId"]}]) == {
                "Data": "ret",
                "EventId": first["EventId"],
            }
    assert served.proc.wait(15) == 0
    assert not os.path.exists(served.socket)


def test_sigterm_with_a_stuck_event_exits_after_the_drain_timeout(
    serve: Callable[..., Served], model: tuple[str, tuple[str, ...]]
) -> None:
    served = serve(model[0], "--drain-timeout", "0.5", *model[1], name="behaviours")
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
    started = time.monotonic()
    assert served.stop() == 0
    assert time.monotonic() - started < 10
    assert "abandoning" in served.log()
    assert not os.path.exists(served.socket)


def test_stale_socket_file_is_replaced(serve: Callable[..., Served], tmp_path: Path) -> None:
    first = serve("behaviours.py", name="stale")
    first.proc.kill()  # no cleanup: the socket file stays behind
    first.proc.wait()
    assert os.path.exists(first.socket)
    second = serve("behaviours.py", name="stale", wait=False, prefix=first.prefix)
    assert second.socket == first.socket
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with KongEmulator(second.socket) as emu:
                assert status(emu)["Pid"] == second.proc.pid
                return
        except Exception:
            time.sleep(0.05)
    raise AssertionError(second.log())


def test_server_exits_when_its_parent_dies(tmp_path: Path, model: tuple[str, tuple[str, ...]]) -> None:
    # A middle process starts the server and dies; the server is reparented.
    prefix = tmp_path / "orphan"
    prefix.mkdir()
    log_path = tmp_path / "server.log"
    script = (
        "import subprocess, sys, os\n"
        f"p = subprocess.Popen([sys.executable, {str(PLUGINS / model[0])!r}, '-p', {str(prefix)!r}, '-v',"
        f" *{list(model[1])!r}],"
        f" stdout=subprocess.DEVNULL, stderr=open({str(log_path)!r}, 'wb'))\n"
        "print(p.pid, flush=True)\n"
        "import time\n"
        f"while not os.path.exists({str(prefix / 'behaviours.socket')!r}): time.sleep(0.01)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    pid = int(out.stdout.strip())
    sock = str(prefix / "behaviours.socket")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("server outlived its parent: " + log_path.read_text())
    assert "parent process" in log_path.read_text()
    assert not os.path.exists(sock)


def test_thousands_of_events_ending_every_way_leave_nothing_behind(
    serve: Callable[..., Served], model: tuple[str, tuple[str, ...]]
) -> None:
    served = serve(model[0], "--event-timeout", "0.3", *model[1], name="behaviours")
    endings = {"plain": "ret", "exit": "exit", "raise": "error", "log-anything": "ret"}
    per_way = 600
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})

        def one(i: int) -> str:
            name = list(endings)[i % len(endings)]
            result = emu.handle_event(iid, "access", answers=case(name))
            assert result.outcome == endings[name], (name, result)
            return result.outcome

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, range(per_way * len(endings))))
        assert outcomes.count("exit") == per_way and outcomes.count("error") == per_way

        # Abandoned by Kong mid-event, and by a client that hung up.
        for _ in range(100):
            first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
            assert isinstance(first, dict)
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.connect(served.socket)
            s.sendall(msgpack.packb([0, 1, "plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}]]))
            s.close()
        st = wait_idle(emu, timeout=20)
        assert st["Events"] == {"Waiting": 0, "Running": 0}
        assert [i["Id"] for i in st["Plugins"]["behaviours"]["Instances"]] == [iid]
        assert emu.discarded_bytes == 0
    assert served.stop() == 0


# behaviours_async.py: every phase async, so the looped model serves the socket.
@pytest.mark.parametrize("plugin", ["behaviours.py", "behaviours_async.py"])
def test_a_server_replaced_on_its_path_passes_new_work_on_and_finishes_its_own(
    serve: Callable[..., Served], plugin: str
) -> None:
    first = serve(plugin, name="handover")
    with KongEmulator(first.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        in_flight = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(in_flight, dict)
        # A newer server takes the path (as --reload starts one): renamed over it.
        second = serve(plugin, "--take-over", name="handover", prefix=first.prefix, wait=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with KongEmulator(second.socket, timeout=5) as fresh:
                    if status(fresh)["Pid"] == second.proc.pid:
                        break
            except RpcError:
                pass
            time.sleep(0.02)
        else:
            raise AssertionError(second.log())
        first.proc.send_signal(signal.SIGTERM)
        first.wait_log("handing new work over")
        # New work on Kong's pooled connection to the old server runs on the new one,
        # whose serverPid makes Kong drop the old instance ids.
        result = emu.run_phase("behaviours", {}, "access", answers=case("plain"))
        assert result.outcome == "ret"
        assert emu.server_pid == second.proc.pid
        # The event in flight finishes on the old server.
        step = emu.call("plugin.Step", [{"EventId": in_flight["EventId"], "Data": "plain"}])
        assert isinstance(step, dict)
        done = emu.call("plugin.Step", [{"EventId": in_flight["EventId"]}])
        assert done == {"Data": "ret", "EventId": in_flight["EventId"]}
    # Kong left its connections: the old server exits and leaves the socket alone.
    assert first.proc.wait(15) == 0
    assert "now belongs to another server" in first.log()
    with KongEmulator(second.socket) as emu:
        assert status(emu)["Pid"] == second.proc.pid
    assert second.stop() == 0
