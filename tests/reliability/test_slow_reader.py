"""A peer that sends but never reads must not hold up the other connections (issue 9).

Connection A floods the server with requests (or asks for one huge reply) and
never reads; the replies fill A's socket buffer. Kong's other connections (B..E)
must still be answered at once: today a reply that cannot be written blocks the
I/O thread for up to Kong's 60 s send timeout.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from kong_pdk.testing import KongEmulator, TransportError

from helpers import headers
from serving import Served

pytestmark = pytest.mark.timeout(60)

# Each peer's answer is due within this many seconds.
PROMPT = 2.0


@pytest.fixture
def hello(serve: Callable[..., Served]) -> Served:
    return serve("py-hello.py")


@pytest.fixture
def instance(hello: Served) -> int:
    with KongEmulator(hello.socket, timeout=5) as emu:
        return emu.start_instance("py-hello", {"message": "hi"})


def never_reading_peer(path: str, payload: bytes) -> socket.socket:
    """Connects and writes ``payload`` from a thread (the write itself may block)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(5)

    def write() -> None:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server stopped reading us: that is its right

    threading.Thread(target=write, daemon=True).start()
    return sock


def one_peer(path: str, iid: int) -> float:
    """GetStatus and a whole access event on a fresh connection; seconds taken."""
    started = time.monotonic()
    with KongEmulator(path, timeout=PROMPT + 1) as emu:
        try:
            status = emu.call("plugin.GetStatus", [])
            assert isinstance(status, dict)
            result = emu.handle_event(
                iid, "access", answers={"kong.request.get_header": headers({"host": "b.test"})}
            )
        except TransportError as e:
            raise AssertionError(f"no answer within {PROMPT + 1}s ({e})") from e
    assert result.outcome == "ret"
    assert result.calls_to("kong.response.set_header")[0].args[1] == "Python says hi to b.test"
    return time.monotonic() - started


def others_are_served(path: str, iid: int) -> None:
    with ThreadPoolExecutor(4) as pool:
        elapsed = list(pool.map(lambda _: one_peer(path, iid), range(4)))
    assert max(elapsed) < PROMPT, elapsed


def test_a_flooding_peer_that_never_reads_stalls_no_one(hello: Served, instance: int) -> None:
    # ~185 KB of back-to-back requests: thousands of replies, far more than a socket buffer holds.
    frames = b"".join(msgpack.packb([0, i, "plugin.GetStatus", []]) for i in range(1, 8_070))
    assert 180_000 < len(frames) < 190_000
    a = never_reading_peer(hello.socket, frames)
    try:
        time.sleep(0.5)  # let the server answer A until A's buffer is full
        others_are_served(hello.socket, instance)
    finally:
        a.close()
    # With A gone, everything is as before.
    others_are_served(hello.socket, instance)


def test_a_huge_reply_never_read_stalls_no_one(hello: Served, instance: int) -> None:
    # StartInstance echoes the config back: ~900 KB that A never reads.
    config = json.dumps({"message": "x" * 900_000})
    request = msgpack.packb([0, 1, "plugin.StartInstance", [{"Name": "py-hello", "Config": config}]])
    a = never_reading_peer(hello.socket, request)
    try:
        time.sleep(0.5)
        others_are_served(hello.socket, instance)
    finally:
        a.close()
    others_are_served(hello.socket, instance)
