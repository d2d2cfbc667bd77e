"""``os._exit`` in a handler ends the thread-model server; a restart recovers (issue 9).

Documented, not fixed: in the thread model the handler runs inside the
server process, and ``os._exit`` ends the process at once (no cleanup, the
socket file stays). Kong restarts the plugin server; the new one must replace
the stale socket and serve. (``-m`` worker processes survive this: only the
worker dies.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator, KongProtocolError, TransportError
from reliability.peers import settle

from helpers import headers, status
from serving import Served

pytestmark = pytest.mark.timeout(60)


def test_os_exit_in_a_handler_ends_the_server_and_a_restart_serves(serve: Callable[..., Served]) -> None:
    first = serve("stalls.py", name="exiting")
    with KongEmulator(first.socket, timeout=5) as emu:
        iid = emu.start_instance("stalls", {"mode": "os-exit"})
        with pytest.raises((TransportError, KongProtocolError)):
            emu.handle_event(iid, "access")
    assert first.proc.wait(10) == 3
    assert os.path.exists(first.socket), "the socket file is left behind"

    second = serve("stalls.py", name="exiting", wait=False, prefix=first.prefix)

    def serves() -> bool:
        assert second.proc.poll() is None, second.log()
        try:
            with KongEmulator(second.socket, timeout=2) as emu:
                return bool(status(emu)["Pid"] == second.proc.pid)
        except (OSError, TransportError):
            return False

    assert settle(serves, timeout=15), second.log()
    with KongEmulator(second.socket, timeout=5) as emu:
        result = emu.run_phase(
            "stalls", {"mode": "hello"}, "access", answers={"kong.request.get_header": headers({"host": "r.test"})}
        )
    assert result.outcome == "ret"
    assert result.calls_to("kong.response.set_header")[0].args == ("x-hello", "hello r.test")
