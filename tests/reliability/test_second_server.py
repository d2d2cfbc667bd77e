"""A second server on the socket path of a live one (issue 17, point 7).

Started by hand, it must not unplug the first: it refuses with one line naming
the holder's pid, and the first keeps serving. Kong's own hand-over (a Kong
reload starts the new worker's server while the old one still serves) and an
explicit ``--take-over`` still replace it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kong_pdk.testing import KongEmulator, RpcError
from reliability.peers import settle

from helpers import status
from serving import PLUGINS, Served

pytestmark = pytest.mark.timeout(60)


def holder(socket: str) -> object:
    with KongEmulator(socket, timeout=5) as emu:
        return status(emu)["Pid"]


@pytest.mark.parametrize("plugin", ["behaviours.py", "behaviours_async.py"])
def test_a_second_server_refuses_a_live_socket_and_names_its_holder(
    serve: Callable[..., Served], plugin: str
) -> None:
    first = serve(plugin, name="shared")
    inode = os.stat(first.socket).st_ino
    second = serve(plugin, name="shared", wait=False, prefix=first.prefix)
    assert second.proc.wait(15) == 1, second.log()
    lines = [line for line in second.log().splitlines() if "error" in line]
    assert lines == [
        f"kong_pdk: error: cannot listen on {first.socket}: another plugin server (pid {first.proc.pid}) "
        "is serving it; stop that one first, or pass --take-over to replace it"
    ], second.log()
    # The first one still owns the path and serves.
    assert os.stat(first.socket).st_ino == inode
    assert holder(first.socket) == first.proc.pid
    assert first.stop() == 0
    assert not os.path.exists(first.socket)


def test_take_over_replaces_a_live_server(serve: Callable[..., Served]) -> None:
    first = serve("behaviours.py", name="shared")
    second = serve("behaviours.py", "--take-over", name="shared", wait=False, prefix=first.prefix)
    assert settle(lambda: holder(first.socket) == second.proc.pid, timeout=15), second.log()
    assert first.stop() == 0
    assert "now belongs to another server" in first.log()
    assert holder(second.socket) == second.proc.pid


def test_a_server_started_by_kong_takes_over_the_previous_one(serve: Callable[..., Served], tmp_path: Path) -> None:
    first = serve("behaviours.py", name="shared")
    # Kong runs the start command from an nginx worker ("nginx: worker process"):
    # a Kong reload starts the new server while the old one still serves.
    log_path = tmp_path / "kong-started.log"
    script = (
        "import subprocess\n"
        f"p = subprocess.Popen([{sys.executable!r}, {str(PLUGINS / 'behaviours.py')!r}, '-p', {str(first.prefix)!r},"
        f" '--socket-name', 'shared.socket'], stderr=open({str(log_path)!r}, 'wb'))\n"
        "print(p.pid, flush=True)\n"
        "p.wait()\n"
    )
    worker = subprocess.Popen(
        ["nginx: worker process", "-c", script], executable=sys.executable, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        pid = int(worker.stdout.readline())
        assert settle(lambda: holder(first.socket) == pid, timeout=15), log_path.read_text()
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    assert first.stop() == 0
    # The orphaned server notices its parent is gone and stops.
    assert settle(lambda: not os.path.exists(first.socket), timeout=15), log_path.read_text()


def test_a_link_to_a_killed_older_server_is_removed_by_the_next_server(serve: Callable[..., Served]) -> None:
    # A newer server reaches the server it replaced through <socket>.<inode>.old,
    # which that server removes when it stops; one killed cannot.
    first = serve("behaviours.py", name="shared")
    first.proc.kill()
    first.proc.wait()
    link = f"{first.socket}.{os.stat(first.socket).st_ino}.old"
    os.link(first.socket, link)
    second = serve("behaviours.py", name="shared", prefix=first.prefix, wait=False)

    def serves() -> bool:
        try:
            return holder(second.socket) == second.proc.pid
        except (OSError, RpcError):
            return False

    assert settle(serves, timeout=15), second.log()
    assert not os.path.exists(link)
    assert second.stop() == 0
