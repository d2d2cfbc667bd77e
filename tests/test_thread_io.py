"""The thread model: the thread that runs a handler reads Kong's connection
itself (src/events/lent.rs, src/models/threads/linger.rs). It takes its own
Steps off the connection, and after ``"ret"`` it reads the next HandleEvent
there and runs it, so an event on a busy connection wakes no other thread:
neither the runtime's I/O thread nor another handler thread."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from kong_pdk.testing import KongConnection, KongEmulator, RpcError

from helpers import switches_over_events
from serving import Served


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    return serve("behaviours.py", "--event-timeout", "5", name="behaviours")


@pytest.fixture
def emu(served: Served) -> Iterator[KongEmulator]:
    with KongEmulator(served.socket) as e:
        yield e


def test_events_on_one_connection_wake_no_other_thread(served: Served, emu: KongEmulator) -> None:
    # The emulator sends one RPC at a time. Before the handler's thread read
    # the connection itself, the runtime's I/O thread woke for every message
    # (3.4 times per event) and handed each new event to a pool thread.
    n = 2000
    delta, rpcs = switches_over_events(served.proc.pid, emu, n)
    handlers = {key: v for key, v in delta.items() if key[1].startswith("kong-pdk-handle")}
    others = sum(v for key, v in delta.items() if key not in handlers)
    assert others / n < 0.2, f"switches of the other threads per event: {others / n:.2f} ({delta})"
    # One handler thread serves every event: it sleeps about once per RPC,
    # waiting for the next; the other handler threads do not run at all.
    busiest = max(handlers.values())
    assert busiest <= rpcs * 1.5 + 50, f"serving thread: {busiest} switches for {rpcs} RPCs"
    assert sum(handlers.values()) - busiest < n * 0.1, f"other handler threads switched: {handlers}"


def plain_event(start: KongConnection, *steps: KongConnection, iid: int) -> None:
    """Runs one ``plain`` event of behaviours.py: the HandleEvent on
    ``start``, its two Steps on ``steps`` (default: ``start``)."""
    first, second = (steps + (start, start))[:2]
    began = time.monotonic()
    call = start.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
    assert isinstance(call, dict) and call["Data"]["Method"] == "kong.request.get_header", call
    eid = call["EventId"]
    call = first.call("plugin.Step", [{"EventId": eid, "Data": "plain"}])
    assert isinstance(call, dict) and call["Data"]["Method"] == "kong.response.set_header", call
    assert second.call("plugin.Step", [{"EventId": eid}]) == {"Data": "ret", "EventId": eid}
    # Nothing waits for a thread or a time-out on the way.
    assert time.monotonic() - began < 2.0


def test_every_request_on_a_lingering_connection_is_answered(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    with emu.connection() as a, emu.connection() as b:
        plain_event(a, iid=iid)  # a's reading stays with the thread that ran it
        # A request only the connection's task serves: the thread gives the
        # connection back, the task answers.
        status = a.call("plugin.GetStatus", [])
        assert isinstance(status, dict) and "Plugins" in status
        plain_event(a, iid=iid)
        # Steps of one event on the other connection and back.
        plain_event(a, b, a, iid=iid)
        # An event started on b whose Steps come on a, where the last
        # event's thread reads: that thread passes them on with the connection.
        plain_event(b, a, a, iid=iid)
        plain_event(b, a, b, iid=iid)
        # An error reply on a lingering connection leaves it served.
        with pytest.raises(RpcError, match="no plugin instance"):
            a.call("plugin.HandleEvent", [{"InstanceId": iid + 12345, "EventName": "access"}])
        plain_event(a, iid=iid)


def test_at_the_thread_limit_the_lingering_thread_is_called(serve: Callable[..., Served]) -> None:
    # One handler thread: an event on b can only run once the thread that
    # lingers on a gives a back; neither connection may wait for the other.
    served = serve("behaviours.py", "--max-handler-threads", "1", name="behaviours")
    with KongEmulator(served.socket) as emu:
        iid = emu.start_instance("behaviours", {})
        with emu.connection() as a, emu.connection() as b:
            for _ in range(20):
                plain_event(a, iid=iid)
                plain_event(b, iid=iid)
                plain_event(b, a, iid=iid)
        assert "no handler thread free" not in served.log()
