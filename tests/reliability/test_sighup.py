"""SIGHUP (a closed terminal, a careless ``kill -HUP``) drains like SIGTERM, in
every execution model: the events in flight finish, the server exits 0 and
removes its socket. Python's default for SIGHUP kills the process at once."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator, RpcError

from serving import Served

MODELS = {
    "thread": ("behaviours.py", ()),
    "asyncio": ("behaviours_async.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
    "processes": ("behaviours.py", ("-m", "1")),
}
IN_FLIGHT = 8


@pytest.mark.parametrize("model", list(MODELS))
def test_sighup_drains_the_events_in_flight_and_exits_cleanly(serve: Callable[..., Served], model: str) -> None:
    if model == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    plugin, flags = MODELS[model]
    served = serve(plugin, "--drain-timeout", "10", *flags, name="behaviours")
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance("behaviours", {})
        events = [emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}]) for _ in range(IN_FLIGHT)]
        assert all(isinstance(e, dict) for e in events)
        served.proc.send_signal(signal.SIGHUP)
        finished = 0
        for event in events:
            assert isinstance(event, dict)
            try:
                with emu.connection() as conn:
                    conn.call("plugin.Step", [{"EventId": event["EventId"], "Data": "plain"}])
                    done = conn.call("plugin.Step", [{"EventId": event["EventId"]}])
                    finished += done == {"Data": "ret", "EventId": event["EventId"]}
            except (RpcError, OSError):
                pass
    assert (finished, served.proc.wait(15)) == (IN_FLIGHT, 0), served.log()
    assert "received SIGHUP, draining" in served.log()
    assert not os.path.exists(served.socket)
