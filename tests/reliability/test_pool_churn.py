"""Handlers that sleep must not keep new events from starting (issue 9).

300 events whose handlers sleep 3 s arrive at once while 8 connections keep
running short events. With ``--max-handler-threads 512`` (the default) there
is a thread for each: every sleeper's handler must start (its first PDK call
reaches Kong) within ~2 s, and the short events must keep completing.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from kong_pdk.testing import KongEmulator

from helpers import headers
from serving import Served

pytestmark = pytest.mark.timeout(90)

SLEEPERS = 300
LOOPERS = 8
SLEEP = 3.0


def test_300_sleepers_all_start_while_short_events_go_on(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py", "--max-handler-threads", "512")
    with KongEmulator(served.socket, timeout=10) as emu:
        sleepy = emu.start_instance("stalls", {"mode": "sleep", "seconds": SLEEP})
        quick = emu.start_instance("stalls", {"mode": "hello"})

    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(LOOPERS)]

    def loop(i: int) -> None:
        answers = {"kong.request.get_header": headers({"host": "q.test"})}
        with KongEmulator(served.socket, timeout=10) as kong:
            while not stop.is_set():
                result = kong.handle_event(quick, "access", answers=answers)
                assert result.outcome == "ret" and result.methods[-1] == "kong.response.set_header"
                latencies[i].append(result.elapsed)

    socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(SLEEPERS)]
    try:
        for s in socks:
            s.connect(served.socket)
            s.setblocking(False)
        with ThreadPoolExecutor(LOOPERS) as pool:
            loopers = [pool.submit(loop, i) for i in range(LOOPERS)]
            time.sleep(0.3)  # the short events are flowing
            before = [len(x) for x in latencies]
            started, ended, t0 = run_sleepers(socks, sleepy)
            stop.set()
            for f in loopers:
                f.result()
    finally:
        stop.set()
        for s in socks:
            s.close()

    late = sorted(started.values())
    assert len(started) == SLEEPERS, f"only {len(started)} of {SLEEPERS} sleepers started"
    assert late[-1] - t0 < 2.0, f"the last sleeper started after {late[-1] - t0:.2f}s"
    assert len(ended) == SLEEPERS
    during = [len(x) - b for x, b in zip(latencies, before, strict=True)]
    assert min(during) > 0, f"a short-event connection made no progress: {during}"
    worst = max(max(x) for x in latencies)
    assert worst < 1.0, f"a short event took {worst:.2f}s"


def run_sleepers(
    socks: list[socket.socket], instance: int
) -> tuple[dict[int, float], dict[int, object], float]:
    """Starts one sleeping event per socket; when each handler started, and its end."""
    sel = selectors.DefaultSelector()
    unpackers = {}
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
        unpackers[i] = msgpack.Unpacker(raw=False, strict_map_key=False)
    t0 = time.monotonic()
    for s in socks:
        s.sendall(msgpack.packb([0, 1, "plugin.HandleEvent", [{"InstanceId": instance, "EventName": "access"}]]))
    started: dict[int, float] = {}
    ended: dict[int, object] = {}
    deadline = t0 + SLEEP + 10
    while len(ended) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            s = socks[i]
            data = s.recv(65536)
            if not data:
                sel.unregister(s)
                ended[i] = "closed by the server"
                continue
            unpackers[i].feed(data)
            for msg in unpackers[i]:
                if msg[0] == 2:
                    continue  # serverPid
                assert msg[0] == 1 and msg[2] is None, msg
                result = msg[3]
                if msg[1] == 1:
                    started[i] = time.monotonic()
                    assert result["Data"] == {"Method": "kong.log.notice", "Args": ["started"]}, result
                    s.setblocking(True)
                    s.sendall(msgpack.packb([0, 2, "plugin.Step", [{"EventId": result["EventId"]}]]))
                    s.setblocking(False)
                else:
                    ended[i] = result["Data"]
                    sel.unregister(s)
    sel.close()
    assert set(ended.values()) <= {"ret"}, set(ended.values())
    return started, ended, t0
