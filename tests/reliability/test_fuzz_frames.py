"""Seeded fuzzing over the real socket: odd frames never crash or confuse the server (issue 9).

Several connections send a few thousand frames: well-formed MessagePack of
random shapes (request-like or not, with msgids of every type), and, at the
end of some exchanges, truncated frames, mutated frames or random bytes after
which the peer hangs up (past such bytes no frame boundary can be trusted).

Afterwards the server has not crashed, answers a normal event correctly, and
every reply it sent carried the msgid of a request sent on that connection
(or nil, for a frame without any msgid). Set KONG_PDK_FUZZ_SEED to replay or
vary a run; the seed is in every failure message.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest

from kong_pdk.testing import KongEmulator

from helpers import headers
from serving import Served

pytestmark = pytest.mark.timeout(120)

SEED = int(os.environ.get("KONG_PDK_FUZZ_SEED", "20261129"))
CONNECTIONS = 4
SESSIONS = 30  # per connection
FRAMES = 50  # per session, at most: ~3000 frames in all (26 on average)
SENTINEL = 4_000_000_000  # msgids at and above this end a session's well-formed part

METHODS = [
    "plugin.StartInstance",
    "plugin.CloseInstance",
    "plugin.HandleEvent",
    "plugin.Step",
    "plugin.StepError",
    "plugin.StepMultiMap",
    "plugin.GetStatus",
    "plugin.GetPluginInfo",
    "plugin.InstanceStatus",
    "plugin.SetPluginDir",
    "plugin.AbandonEvent",
    "plugin.Nope",
    "kong.request.get_header",
    "",
    "plugin.",
    ".",
]


def rand_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -33, -129, -(2**63)])
    if kind == 3:
        return rng.randrange(-(2**40), 2**40)
    if kind == 4:
        return rng.choice([0.0, -0.0, 3.5, 1e300, float("inf"), float("nan"), rng.uniform(-1e6, 1e6)])
    if kind == 5:
        n = rng.choice([0, 1, 5, 31, 32, 40, 255, 256, 300])
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)])) for _ in range(n))
    if kind == 6:
        return rng.randbytes(rng.choice([0, 1, 16, 255, 256, 300]))
    if kind == 7:
        return msgpack.ExtType(rng.randrange(0, 128), rng.randbytes(rng.choice([1, 2, 4, 8, 16, 3, 100])))
    if kind in (8, 9):
        return [rand_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 4, 16, 20]))]
    return {
        rng.choice([rand_value(rng, 4), "InstanceId", "EventId", "Name", "Config", "Data", "EventName"]): rand_value(
            rng, depth + 1
        )
        for _ in range(rng.choice([0, 1, 2, 4, 17]))
    }


def rand_msgid(rng: random.Random) -> object:
    return rng.choice(
        [
            rng.randrange(1, 2**31),
            rng.randrange(0, 128),
            2**64 - 1,
            -rng.randrange(1, 2**40),
            str(rng.randrange(100)),
            rng.randrange(1, 1000) + 0.5,
            None,
            True,
        ]
    )


def request_like(rng: random.Random) -> tuple[object, list[object]]:
    """A frame shaped like a request, or nearly; with its msgid when it has one."""
    msgid = rand_msgid(rng)
    method: object = rng.choice(METHODS) if rng.random() < 0.9 else rand_value(rng, 3)
    params: object = [rand_value(rng, 1) for _ in range(rng.randrange(3))] if rng.random() < 0.8 else rand_value(rng)
    kind: object = 0 if rng.random() < 0.9 else rand_value(rng, 4)
    frame: list[object] = [kind, msgid, method, params]
    if rng.random() < 0.1:
        frame = frame[: rng.randrange(5)]  # too short
    elif rng.random() < 0.05:
        frame.append(rand_value(rng, 3))  # too long
    return frame, ([msgid] if len(frame) >= 2 else [])


def key(msgid: object) -> tuple[str, str]:
    # 1, 1.0 and True are different msgids on the wire; repr also makes NaN,
    # lists and maps comparable.
    return (type(msgid).__name__, repr(msgid))


def run_connection(path: str, index: int) -> int:
    rng = random.Random(SEED * 1000 + index)
    sent_frames = 0
    for session in range(SESSIONS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        sent: set[tuple[str, str]] = {key(None)}
        replies: list[Any] = []
        tail_replies: list[Any] = []
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        try:
            chunks = []
            for _ in range(rng.randrange(1, FRAMES)):
                if rng.random() < 0.7:
                    frame, ids = request_like(rng)
                else:
                    frame = rand_value(rng)
                    # An array's second element is where a request's msgid is.
                    ids = [frame[1]] if isinstance(frame, list) and len(frame) >= 2 else []
                chunks.append(msgpack.packb(frame))
                sent.update(key(i) for i in ids)
            sentinel = SENTINEL + index * SESSIONS + session
            chunks.append(msgpack.packb([0, sentinel, "plugin.GetStatus", []]))
            sent.add(key(sentinel))
            sock.sendall(b"".join(chunks))
            sent_frames += len(chunks)
            # Replies come in order: the sentinel's is the last one for the well-formed part.
            closed = read_until(sock, unpacker, replies, lambda s=sentinel, rs=replies: any(r[1] == s for r in rs))
            assert not closed, f"seed {SEED}: the server hung up on well-formed frames"
            tail = rng.random()
            if tail < 0.5:
                garbage = bad_bytes(rng)
                try:
                    sock.sendall(garbage)
                except OSError:
                    pass  # hung up on us: allowed after garbage
                sent_frames += 1
                sock.shutdown(socket.SHUT_WR)
                read_until(sock, unpacker, tail_replies, lambda: False)
        finally:
            sock.close()
        for reply in replies + tail_replies:
            assert isinstance(reply, list) and len(reply) == 4 and reply[0] == 1, f"seed {SEED}: {reply!r:.300}"
        for reply in replies:
            assert key(reply[1]) in sent, f"seed {SEED}: reply msgid {reply[1]!r} was never sent: {reply!r:.300}"
        # Replies to the bad bytes are only checked for shape: a mutated byte may be the msgid.
    return sent_frames


def bad_bytes(rng: random.Random) -> bytes:
    """A frame cut short, a frame with flipped bytes, or plain random bytes."""
    good = msgpack.packb([0, rng.randrange(1, 100), rng.choice(METHODS), [rand_value(rng, 1)]])
    choice = rng.randrange(3)
    if choice == 0:
        return good[: rng.randrange(1, len(good))]
    if choice == 1:
        mutated = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        return bytes(mutated)
    return rng.randbytes(rng.randrange(1, 200))


def read_until(sock: socket.socket, unpacker: Any, replies: list[Any], done: Callable[[], bool]) -> bool:
    """Reads replies (dropping serverPid notifications) until done(); True if the server hung up."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"seed {SEED}: no reply within 10s"
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return True
        if not data:
            return True
        unpacker.feed(data)
        for msg in unpacker:
            if isinstance(msg, list) and msg and msg[0] == 2:
                continue
            replies.append(msg)
    return False


def test_thousands_of_odd_frames_leave_the_server_well(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py")
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        sent = sum(pool.map(lambda i: run_connection(served.socket, i), range(CONNECTIONS)))
    assert sent > 2500, sent
    assert served.proc.poll() is None, served.log()[-3000:]
    with KongEmulator(served.socket, timeout=5) as emu:
        result = emu.run_phase(
            "stalls", {"mode": "hello"}, "access", answers={"kong.request.get_header": headers({"host": "f.test"})}
        )
        assert result.outcome == "ret"
        assert result.calls_to("kong.response.set_header")[0].args == ("x-hello", "hello f.test")
        assert emu.discarded_bytes == 0
    assert "panicked" not in served.log()
