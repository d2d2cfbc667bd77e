"""Peers that send requests and never read the replies cost bounded memory, in
every execution model (issue 17, point 1).

Each of 16 peers sends 150 GetStatus back to back and never reads. Their replies
are large (the server holds 200 instances), so they soon fill the peers' socket
buffers. The server must then stop reading those peers, as the thread model
always did, instead of answering everything into memory: before, the looped
models (all-``async def`` and ``-g``) grew by the sum of every reply, ~80 MB
here (~1 GB with bigger replies) and held it until the peers left.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import msgpack
import pytest

from kong_pdk.testing import KongEmulator

from serving import Served

pytestmark = pytest.mark.timeout(60)

MODELS = {
    "thread": ("behaviours.py", ()),
    "asyncio": ("behaviours_async.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
}
PEERS = 16
REQUESTS_EACH = 150
INSTANCES = 200
# What the server may grow by while the peers hold their replies unread: a few
# socket buffers' worth, not the ~80 MB of every reply.
GROWTH_LIMIT_MB = 25


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextmanager
def never_reading_peers(path: str, payload: bytes) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        peers = []
        for _ in range(PEERS):
            s = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            s.connect(path)
            s.setblocking(False)
            try:
                s.send(payload)  # as much as the socket takes now; never read
            except BlockingIOError:
                pass
            peers.append(s)
        yield peers


@pytest.mark.parametrize("model", list(MODELS))
def test_peers_that_never_read_cost_bounded_memory(serve: Callable[..., Served], model: str) -> None:
    if model == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    plugin, flags = MODELS[model]
    served = serve(plugin, *flags, name="behaviours")
    with KongEmulator(served.socket, timeout=10) as emu:
        for _ in range(INSTANCES):
            emu.start_instance("behaviours", {"padding": "x" * 200})
        status = emu.call("plugin.GetStatus", [])
    reply_size = len(msgpack.packb(status))
    assert reply_size > 10_000, "GetStatus replies big enough to fill a socket buffer"
    before = rss_mb(served.proc.pid)
    payload = b"".join(msgpack.packb([0, i, "plugin.GetStatus", []]) for i in range(REQUESTS_EACH))
    with never_reading_peers(served.socket, payload):
        peak = before
        for _ in range(15):
            time.sleep(0.1)
            peak = max(peak, rss_mb(served.proc.pid))
        # Everyone else is still answered at once.
        started = time.monotonic()
        with KongEmulator(served.socket, timeout=5) as emu:
            assert isinstance(emu.call("plugin.GetStatus", []), dict)
        assert time.monotonic() - started < 2.0
    every_reply_mb = PEERS * REQUESTS_EACH * reply_size / 2**20
    assert peak - before < GROWTH_LIMIT_MB, (
        f"{model}: grew {peak - before:.0f} MB holding replies nobody reads "
        f"(all of them: {every_reply_mb:.0f} MB)"
    )
    assert served.proc.poll() is None, served.log()


@pytest.mark.parametrize("model", ["asyncio", "gevent"])
def test_a_peer_reading_again_gets_every_reply_in_order(serve: Callable[..., Served], model: str) -> None:
    """Reading that paused for a peer resumes once it reads: nothing is lost."""
    if model == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    plugin, flags = MODELS[model]
    served = serve(plugin, *flags, name="behaviours")
    with KongEmulator(served.socket, timeout=10) as emu:
        for _ in range(50):
            emu.start_instance("behaviours", {"padding": "x" * 200})
    count = 400
    payload = b"".join(msgpack.packb([0, i, "plugin.GetStatus", []]) for i in range(1, count + 1))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(served.socket)
        s.sendall(payload)
        time.sleep(0.5)  # the server fills our buffer and stops reading us
        s.settimeout(10)
        unpacker = msgpack.Unpacker(raw=False)
        msgids = []
        while len(msgids) < count:
            chunk = s.recv(1 << 16)
            assert chunk, f"closed after {len(msgids)} replies"
            unpacker.feed(chunk)
            msgids += [m[1] for m in unpacker if m[0] == 1]
    assert msgids == list(range(1, count + 1))
