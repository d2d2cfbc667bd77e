"""A handler that blocks the event loop is named, and --handler-timeout fails it closed (issue 17, point 6).

In the looped models (every phase ``async def``; ``-g``) one loop serves every
event, so a handler that never yields (``time.sleep`` in ``async def``, a CPU
loop under ``-g``) holds up all of them. A watchdog thread sees the loop stop
turning and logs one warning per stall naming the plugin, the phase and the
blocking line. With ``--handler-timeout`` the stalled event fails closed once
the handler yields, as in the thread model: Kong gets ``kong.log.err`` then a
500, and the handler's next PDK call raises ``EventAbandoned``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator

from serving import PLUGINS, Served

pytestmark = pytest.mark.timeout(30)

MODELS = {
    "asyncio": ("blocks_loop_async", ()),
    "gevent": ("blocks_loop", ("-g",)),
    "greenlets": ("blocks_loop", ("--model", "greenlets")),
}


def blocking_line(plugin: str) -> str:
    """``file:line`` of the plugin's blocking statement."""
    path = PLUGINS / f"{plugin}.py"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "# BLOCKS THE LOOP" in line:
            return f"{path}:{number}"
    raise AssertionError(f"no blocking line in {path}")


def stall_warnings(served: Served) -> list[str]:
    return [line for line in served.log().splitlines() if "blocked the event loop" in line]


@pytest.mark.parametrize("model", MODELS)
def test_a_stall_is_logged_once_with_plugin_phase_and_line(serve: Callable[..., Served], model: str) -> None:
    plugin, args = MODELS[model]
    served = serve(f"{plugin}.py", *args)
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance(plugin, {"seconds": 1.5})
        result = emu.handle_event(iid, "access")
    # Without --handler-timeout the handler just runs late.
    assert result.methods == ["kong.response.set_header"], result.methods
    log = served.wait_log("blocked the event loop", timeout=2)
    warnings = stall_warnings(served)
    assert len(warnings) == 1, warnings
    assert f"{plugin} access handler" in warnings[0], warnings[0]
    assert blocking_line(plugin) in log, log
    assert "EventAbandoned" not in log


@pytest.mark.parametrize("model", MODELS)
def test_a_stalled_handler_past_the_timeout_fails_closed_once_it_yields(
    serve: Callable[..., Served], model: str
) -> None:
    plugin, args = MODELS[model]
    served = serve(f"{plugin}.py", *args, "--handler-timeout", "1")
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance(plugin, {"seconds": 1.5})
        result = emu.handle_event(iid, "access")
    assert result.methods == ["kong.log.err", "kong.response.error"], result.methods
    assert "timed out" in str(result.calls[0].args[0])
    assert result.outcome == "error" and result.status == 500
    log = served.wait_log("EventAbandoned after the block", timeout=2)
    assert "timed out" in log
    assert len(stall_warnings(served)) == 1, log
    assert blocking_line(plugin) in log, log


def test_an_awaiting_handler_past_the_timeout_fails_closed_without_a_stall(serve: Callable[..., Served]) -> None:
    # The loop turns (nothing to warn of), but the handler holds Kong's request.
    served = serve("blocks_loop_async.py", "--handler-timeout", "1")
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance("blocks_loop_async", {"seconds": 1.5, "await": True})
        result = emu.handle_event(iid, "access")
    assert result.methods == ["kong.log.err", "kong.response.error"], result.methods
    assert "timed out" in str(result.calls[0].args[0])
    assert result.outcome == "error" and result.status == 500
    log = served.wait_log("EventAbandoned after the block", timeout=2)
    assert stall_warnings(served) == [], log
