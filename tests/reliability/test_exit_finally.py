"""Code that runs after ``kong.response.exit`` (a ``finally``) must not delay the next event (issue 9).

The exit is the event's last reply to Kong, and Kong sends its next event at
once. If the handler's thread was already counted free when it wrote that
reply, the next event waits for the ``finally`` block to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator

from helpers import headers
from serving import Served

pytestmark = pytest.mark.timeout(30)


def test_the_next_event_does_not_wait_for_a_finally_after_exit(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py")
    with KongEmulator(served.socket, timeout=10) as emu:
        exiting = emu.start_instance("stalls", {"mode": "exit-then-finally", "seconds": 2})
        quick = emu.start_instance("stalls", {"mode": "hello"})
        answers = {"kong.request.get_header": headers({"host": "n.test"})}
        # Warm up: one thread exists and is idle, as in a server that has run a while.
        assert emu.handle_event(quick, "access", answers=answers).outcome == "ret"

        first = emu.handle_event(exiting, "access")
        assert (first.outcome, first.status, first.body) == ("exit", 403, "bye")
        with emu.connection() as other:
            started = time.monotonic()
            reply = other.call("plugin.HandleEvent", [{"InstanceId": quick, "EventName": "access"}])
            assert isinstance(reply, dict)
            assert reply["Data"] == {"Method": "kong.request.get_header", "Args": ["host"]}
            step = other.call("plugin.Step", [{"EventId": reply["EventId"], "Data": "n.test"}])
            assert isinstance(step, dict) and step["Data"]["Method"] == "kong.response.set_header"
            assert other.call("plugin.Step", [{"EventId": reply["EventId"]}]) == {
                "Data": "ret",
                "EventId": reply["EventId"],
            }
            elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"the next event took {elapsed:.2f}s (the finally sleeps 2s)"
