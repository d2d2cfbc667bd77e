"""The thread model: the thread that runs a handler reads Kong's connection
itself (src/events/lent.rs, src/executor/thread/linger.rs). It takes its own
Steps off the connection, and after ``"ret"`` it reads the next HandleEvent
there and runs it, so an event on a busy connection wakes no other thread:
neither the runtime's I/O thread nor another handler thread."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serving import Served
from helpers import case
from kong_pdk.testing import KongEmulator


def switches_by_thread(pid: int) -> dict[tuple[str, str], int]:
    """Voluntary context switches of each thread of ``pid`` by (id, name):
    how often each went to sleep."""
    counts: dict[tuple[str, str], int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:  # the thread just exited
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        counts[(tid, fields["Name"].strip())] = int(fields["voluntary_ctxt_switches"])
    return counts


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
    iid = emu.start_instance("behaviours", {})
    answers = case("plain")
    emu.handle_event(iid, "access", answers=answers)  # warm-up
    before = switches_by_thread(served.proc.pid)
    rpcs = 0
    for _ in range(n):
        result = emu.handle_event(iid, "access", answers=answers)
        assert result.outcome == "ret"
        rpcs += 1 + len(result.calls)
    after = switches_by_thread(served.proc.pid)
    delta = {key: after[key] - before.get(key, 0) for key in after}
    handlers = {key: v for key, v in delta.items() if key[1].startswith("kong-pdk-handle")}
    others = sum(v for key, v in delta.items() if key not in handlers)
    assert others / n < 0.2, f"switches of the other threads per event: {others / n:.2f} ({delta})"
    # One handler thread serves every event: it sleeps about once per RPC,
    # waiting for the next; the other handler threads do not run at all.
    busiest = max(handlers.values())
    assert busiest <= rpcs * 1.5 + 50, f"serving thread: {busiest} switches for {rpcs} RPCs"
    assert sum(handlers.values()) - busiest < n * 0.1, f"other handler threads switched: {handlers}"
