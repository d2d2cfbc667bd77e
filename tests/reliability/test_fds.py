"""Descriptors: one per connection, and running out of them is survived quietly (issue 9).

Kong keeps up to 256 idle connections per socket, so each connection's cost
in descriptors bounds how many Kong workers a server can take. When the
process limit is reached, ``accept`` fails with EMFILE until a connection
closes: the server must neither spin nor flood its log (Kong's error log),
and must serve again once descriptors are free.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable

import pytest

from reliability.peers import RawPeer, fd_count, settle

from serving import Served

pytestmark = pytest.mark.timeout(60)

CONNECTIONS = 200


def test_an_open_connection_costs_one_descriptor(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py")
    pid = served.proc.pid
    with RawPeer(served.socket) as warm:
        assert warm.call("plugin.GetStatus", [])[2] is None
    time.sleep(0.2)
    before = fd_count(pid)
    peers = [RawPeer(served.socket) for _ in range(CONNECTIONS)]
    try:
        for i, peer in enumerate(peers):
            assert peer.call("plugin.GetStatus", [], msgid=i + 1)[1:3] == [i + 1, None]
        per_connection = (fd_count(pid) - before) / CONNECTIONS
    finally:
        for peer in peers:
            peer.close()
    assert per_connection <= 1.1, f"{per_connection:.2f} descriptors per connection"


def test_running_out_of_descriptors_is_logged_sparingly_and_survived(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py")
    pid = served.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (128, 128))
    log_offset = len(served.log())
    # Connections beyond what the server can accept wait in the listen queue.
    extra = []
    for _ in range(CONNECTIONS):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(served.socket)
        extra.append(s)
    assert settle(lambda: "accept failed" in served.log()[log_offset:], timeout=5), served.log()[log_offset:]
    time.sleep(2)  # a server out of descriptors for a while
    failures = served.log()[log_offset:].count("accept failed")
    for s in extra:
        s.close()
    assert failures <= 5, f"'accept failed' logged {failures} times in ~2 s"

    def serves() -> bool:
        try:
            with RawPeer(served.socket, timeout=2) as peer:
                return bool(peer.call("plugin.GetStatus", [], msgid=5)[1:3] == [5, None])
        except OSError:
            return False

    assert settle(serves, timeout=10), served.log()[-2000:]
    assert served.proc.poll() is None
