"""Unfinished frames trickled in by many peers cost CPU linear in the bytes
received, in every execution model (issue 17, point 2).

Each of 40 peers sends 1 MiB of a frame it never finishes, then one more byte
every 50 ms. The server used to re-scan every unfinished frame from its start
on each read: 40 MiB scanned per 50 ms, ~0.6 s of CPU per second (a core
pinned with 100 such peers) for 800 bytes/s of input. Keeping the scan's
position makes each byte cost the same however the frame is sliced.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack

import msgpack
import pytest

from reliability.peers import RawPeer

from serving import Served

pytestmark = pytest.mark.timeout(60)

MODELS = {
    "thread": ("behaviours.py", ()),
    "asyncio": ("behaviours_async.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
}
PEERS = 40
HELD = 1 << 20
TRICKLE_S = 2.0
# Server CPU seconds over the trickle: ~1.2 s before, ~0.03 s after.
CPU_LIMIT_S = 0.4


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unfinished_step() -> bytes:
    """The head of a Step whose Data announces 10M elements, and 1 MiB of them."""
    return (
        b"\x94\x00\x07"
        + msgpack.packb("plugin.Step")
        + b"\x91\x82"
        + msgpack.packb("EventId")
        + msgpack.packb(1)
        + msgpack.packb("Data")
        + b"\xdd"
        + (10_000_000).to_bytes(4, "big")
        + b"\x01" * HELD
    )


@pytest.mark.parametrize("model", MODELS)
def test_trickled_unfinished_frames_cost_linear_cpu(serve: Callable[..., Served], model: str) -> None:
    plugin, args = MODELS[model]
    served = serve(plugin, *args)
    pid = served.proc.pid
    head = unfinished_step()
    with ExitStack() as stack:
        peers = []
        for _ in range(PEERS):
            s = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            s.settimeout(10)
            s.connect(served.socket)
            s.sendall(head)
            peers.append(s)
        with RawPeer(served.socket) as probe:
            assert probe.call("plugin.GetStatus", [])[2] is None
        time.sleep(0.5)
        before = cpu_seconds(pid)
        deadline = time.monotonic() + TRICKLE_S
        while time.monotonic() < deadline:
            for s in peers:
                s.sendall(b"\x01")
            time.sleep(0.05)
        spent = cpu_seconds(pid) - before
        with RawPeer(served.socket) as probe:
            assert probe.call("plugin.GetStatus", [], msgid=2)[1:3] == [2, None]
    assert spent < CPU_LIMIT_S, f"{spent:.2f} s of server CPU for {PEERS} trickling peers in {TRICKLE_S} s"
