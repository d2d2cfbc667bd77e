"""The looped model: for ``async def`` plugins and ``-g``, the event loop's own
thread owns Kong's socket (src/models/looped/). What it must guarantee beyond the
shared behaviours of test_models.py: no thread hand-off per PDK call, writes
that never block the loop, one PDK call in flight per event."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import msgpack
import pytest

from kong_pdk.testing import KongEmulator

from helpers import case, switches_over_events, wait_idle
from serving import Served

MODELS = {
    "asyncio": ("behaviours_async.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
}


@pytest.fixture(params=list(MODELS))
def served(request: pytest.FixtureRequest, serve: Callable[..., Served]) -> Served:
    if request.param == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    plugin, args = MODELS[request.param]
    return serve(plugin, "--event-timeout", "5", "--max-message-size", "1000000", *args, name="behaviours")


@pytest.fixture
def emu(served: Served) -> Iterator[KongEmulator]:
    with KongEmulator(served.socket) as e:
        yield e


def test_no_thread_hand_off_per_pdk_call(served: Served, emu: KongEmulator) -> None:
    # The emulator drives events one RPC at a time, so the thread that serves
    # sleeps once per RPC waiting for the next: that one thread's switches
    # are the emulator's pace. Any other thread switching per event would be
    # a hand-off (the bridged design woke an I/O thread and the loop thread
    # for every call: several switches per event on a second thread).
    n = 2000
    delta, rpcs = switches_over_events(served.proc.pid, emu, n)
    serving = max(delta, key=lambda key: delta[key])
    others = sum(v for key, v in delta.items() if key != serving)
    assert others / n < 0.5, f"switches of the other threads per event: {others / n:.2f} ({delta})"
    # About one sleep per RPC on the serving thread (it waits for Kong; an
    # event loop may wake once more now and then, e.g. for its timers).
    assert delta[serving] <= rpcs * 1.5 + 50, f"serving thread: {delta[serving]} switches for {rpcs} RPCs"


def test_a_peer_that_never_reads_does_not_stall_the_others(served: Served, emu: KongEmulator) -> None:
    # A peer floods requests and never reads a reply: once its replies fill
    # its socket, the server stops reading its requests (they stay in the
    # kernel, so its writes block) instead of answering them into memory.
    # Events on other connections go on meanwhile.
    iid = emu.start_instance("behaviours", {})
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(served.socket)
    request = msgpack.packb([0, 1, "plugin.GetPluginInfo", ["behaviours"]])
    flood_done = threading.Event()

    def flood() -> None:
        try:
            for _ in range(200):
                stuck.sendall(request * 1000)
        except OSError:  # our own close below ends the blocked write
            pass
        finally:
            flood_done.set()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    for _ in range(20):
        assert emu.handle_event(iid, "access", answers=case("plain")).outcome == "ret"
    assert not flood_done.wait(1.0), "the server read every request of a peer that reads nothing"
    stuck.shutdown(socket.SHUT_RDWR)
    stuck.close()
    assert flood_done.wait(10)
    for _ in range(5):
        assert emu.handle_event(iid, "access", answers=case("plain")).outcome == "ret"
    assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_two_pdk_calls_in_flight_in_one_event(serve: Callable[..., Served]) -> None:
    # asyncio.gather(kong.a(), kong.b()): the first call goes to Kong, the
    # second fails where it is awaited, and the handler raises with it. Kong's
    # side stays consistent: the Step for the first call, which nobody awaits
    # any more, is answered by failing the event closed (kong.log.err, 500).
    served = serve("behaviours_async.py", name="behaviours")
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("behaviours", {}, "access", answers=case("gather"))
        assert result.outcome == "error", result
        assert [c.args for c in result.calls_to("kong.request.get_header")] == [("x-case",), ("x-a",)]
        (logged,) = result.calls_to("kong.log.err")
        assert "already waiting for Kong" in str(logged.args[0])
        # The same text as in the thread model, naming the call that was refused.
        assert "kong.request.get_header: another PDK call of this event is already waiting" in served.wait_log(
            "already waiting"
        )
        assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}
        assert emu.run_phase("behaviours", {}, "access", answers=case("plain")).outcome == "ret"


def test_step_for_an_event_that_is_not_waiting(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    with emu.connection() as conn:
        first = conn.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        event_id = first["EventId"]
        reply = conn.exchange("plugin.Step", [{"EventId": event_id + 1000}])
        assert reply.error is not None and "not found" in reply.error
        # The real event is still waiting for its Step and goes on.
        step = conn.call("plugin.Step", [{"EventId": event_id, "Data": "plain"}])
        assert isinstance(step, dict) and step["Data"]["Method"] == "kong.response.set_header"
        assert conn.call("plugin.Step", [{"EventId": event_id}]) == {"Data": "ret", "EventId": event_id}


def test_steps_of_one_event_on_different_connections(emu: KongEmulator) -> None:
    # Kong's pool: each Step may come on any connection; replies follow them.
    iid = emu.start_instance("behaviours", {})
    with emu.connection() as a, emu.connection() as b:
        first = a.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        event_id = first["EventId"]
        step = b.call("plugin.Step", [{"EventId": event_id, "Data": "plain"}])
        assert isinstance(step, dict) and step["Data"]["Method"] == "kong.response.set_header"
        assert a.call("plugin.Step", [{"EventId": event_id}]) == {"Data": "ret", "EventId": event_id}
