"""Two PDK calls of one event at the same time: one reaches Kong, the other raises at once (issue 9).

Kong runs an event's PDK calls one after the other (each Step answers one
call). A handler that calls the PDK from a second thread, or awaits two calls
with ``asyncio.gather``, would otherwise send Kong a second request while the
first is unanswered. Expected: exactly one ``{Method, Args}`` reaches Kong; the
other call raises ``RuntimeError`` ("... already waiting for Kong ...") without
waiting; the event ends normally and Kong never sees an error reply.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable

import pytest

from kong_pdk.testing import EventResult, KongEmulator

from serving import Served

pytestmark = pytest.mark.timeout(30)


def slow_header(name: str) -> str:
    # Kong takes its time: the other call surely starts while this one waits.
    time.sleep(0.5)
    return f"value-{name}"


def check_one_call_reached_kong(result: EventResult) -> None:
    assert result.outcome == "ret", result
    asked = result.calls_to("kong.request.get_header")
    assert len(asked) == 1, [c.args for c in asked]
    assert asked[0].args[0] in ("a", "b")
    (reported,) = result.calls_to("kong.response.set_header")
    assert reported.args[0] == "x-errors"
    errors = ast.literal_eval(str(reported.args[1]))
    assert len(errors) == 1, errors
    assert "already waiting for Kong" in errors[0]
    assert "kong.log.err" not in result.methods
    # The loser did not wait for the winner's answer: 0.5 s, not two of them.
    assert result.elapsed < 1.5


def test_a_second_thread_calling_the_pdk_mid_call_gets_runtime_error(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py")
    with KongEmulator(served.socket, timeout=5) as emu:
        result = emu.run_phase(
            "stalls", {"mode": "two-threads"}, "access", answers={"kong.request.get_header": slow_header}
        )
        check_one_call_reached_kong(result)
        assert emu.discarded_bytes == 0


def test_asyncio_gather_of_two_pdk_calls_gets_runtime_error(serve: Callable[..., Served]) -> None:
    served = serve("stalls_async.py")
    with KongEmulator(served.socket, timeout=5) as emu:
        result = emu.run_phase("stalls-async", {}, "access", answers={"kong.request.get_header": slow_header})
        check_one_call_reached_kong(result)
        assert emu.discarded_bytes == 0
