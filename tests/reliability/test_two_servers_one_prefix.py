"""A server that stops must not remove the socket another server took over (issue 9).

Kong restarts a plugin server on the same prefix; the new one replaces the
socket file. When the old one then gets SIGTERM, removing "its" socket path
would unplug the new server from Kong.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator
from reliability.peers import settle

from helpers import status
from serving import Served

pytestmark = pytest.mark.timeout(60)


def test_sigterm_of_the_old_server_leaves_the_new_servers_socket(serve: Callable[..., Served]) -> None:
    a = serve("stalls.py", name="shared")
    with KongEmulator(a.socket, timeout=5) as emu:
        assert status(emu)["Pid"] == a.proc.pid
    first_inode = os.stat(a.socket).st_ino

    # As Kong's next server does (a live holder is replaced only when asked).
    b = serve("stalls.py", "--take-over", name="shared", wait=False, prefix=a.prefix)
    assert b.socket == a.socket

    def b_took_over() -> bool:
        assert b.proc.poll() is None, b.log()
        return os.path.exists(b.socket) and os.stat(b.socket).st_ino != first_inode

    # B binds under a temporary name and renames it over A's file.
    assert settle(b_took_over, timeout=15), b.log()
    with KongEmulator(b.socket, timeout=5) as emu:
        assert status(emu)["Pid"] == b.proc.pid

    assert a.stop() == 0
    assert os.path.exists(b.socket), "A removed the socket file B is serving on"
    with KongEmulator(b.socket, timeout=5) as emu:
        assert status(emu)["Pid"] == b.proc.pid
