"""A handler that blocks the event loop is named, and --handler-timeout fails it closed (issue 17, point 6).

In the looped models (every phase ``async def``; ``-g``) one loop serves every
event, so a handler that never yields (``time.sleep`` in ``async def``, a CPU
loop under ``-g``) holds up all of them. A watchdog thread sees the loop stop
turning and logs one warning per stall naming the plugin, the phase and the
blocking line. With ``--handler-timeout`` the stalled event fails closed once
the handler yields, as in the thread model: Kong gets ``kong.log.err`` then a
500, and the handler's next PDK call raises ``EventAbandoned``.

The looped ProtoBuf:1 server (``--protocol protobuf``; src/protobuf/looped/)
has the same two safety nets, driven here by a protobuf Kong (tests/pb_kong.py):
ProtoBuf:1 has no ``kong.response.error``, so the 500 is its fail-closed
``kong.response.exit``, and the event's connection carries Kong's next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from pb_kong import KongPb, pb2

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


def assert_one_stall_named(served: Served, plugin: str) -> None:
    """The watchdog logged one stall, naming the plugin's access handler and
    its blocking line, and no event was abandoned (no --handler-timeout)."""
    log = served.wait_log("blocked the event loop", timeout=2)
    warnings = stall_warnings(served)
    assert len(warnings) == 1, warnings
    assert f"{plugin} access handler" in warnings[0], warnings[0]
    assert blocking_line(plugin) in log, log
    assert "EventAbandoned" not in log


@pytest.mark.parametrize("model", MODELS)
def test_a_stall_is_logged_once_with_plugin_phase_and_line(serve: Callable[..., Served], model: str) -> None:
    plugin, args = MODELS[model]
    served = serve(f"{plugin}.py", *args)
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance(plugin, {"seconds": 1.5})
        result = emu.handle_event(iid, "access")
    # Without --handler-timeout the handler just runs late.
    assert result.methods == ["kong.response.set_header"], result.methods
    assert_one_stall_named(served, plugin)


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


# -- ProtoBuf:1 -------------------------------------------------------------------

PROTOBUF = ("--protocol", "protobuf")


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return pb2(str(tmp_path_factory.mktemp("pb2")))


def pb_model(model: str) -> tuple[str, tuple[str, ...]]:
    if model == "gevent":
        pytest.importorskip("gevent", reason="the -g model needs gevent (make dev installs it)")
    plugin, args = MODELS[model]
    return plugin, (*args, *PROTOBUF)


def kong_answers(_call: Any) -> None:
    """Kong's default reply to every call (the plugin only sets a header)."""
    return None


def names(conn: KongPb) -> list[str]:
    return [c.name for c in conn.calls]


@pytest.mark.parametrize("model", MODELS)
def test_a_stall_on_protobuf_is_logged_once_with_plugin_phase_and_line(
    serve: Callable[..., Served], pb: ModuleType, model: str
) -> None:
    plugin, args = pb_model(model)
    served = serve(f"{plugin}.py", *args)
    conn = KongPb.connect(pb, served.socket)
    try:
        iid = conn.start(plugin, '{"seconds": 1.5}')
        conn.event(iid, "access", kong_answers)
    finally:
        conn.close()
    # Without --handler-timeout the handler just runs late.
    assert names(conn) == ["kong.response.set_header"]
    assert_one_stall_named(served, plugin)


def assert_failed_closed(conn: KongPb) -> None:
    """The event's calls as Kong saw them: the timeout logged, then a 500."""
    assert names(conn) == ["kong.log.err", "kong.response.exit"], names(conn)
    log_err, exit_call = conn.calls
    assert "timed out" in log_err.args.values[0].string_value
    assert exit_call.args.status == 500


@pytest.mark.parametrize("model", MODELS)
def test_a_stalled_protobuf_handler_past_the_timeout_fails_closed_and_the_server_serves_on(
    serve: Callable[..., Served], pb: ModuleType, model: str
) -> None:
    plugin, args = pb_model(model)
    served = serve(f"{plugin}.py", *args, "--handler-timeout", "1")
    conn = KongPb.connect(pb, served.socket)
    try:
        iid = conn.start(plugin, '{"seconds": 1.5}')
        conn.event(iid, "access", kong_answers)
        assert_failed_closed(conn)
        log = served.wait_log("EventAbandoned after the block", timeout=2)
        assert "timed out" in log
        assert len(stall_warnings(served)) == 1, log
        assert blocking_line(plugin) in log, log
        # The same connection carries Kong's next event, which runs in time.
        conn.calls.clear()
        quick = conn.start(plugin, '{"seconds": 0.01}')
        conn.event(quick, "access", kong_answers)
        assert names(conn) == ["kong.response.set_header"]
    finally:
        conn.close()


def test_an_awaiting_protobuf_handler_past_the_timeout_fails_closed_while_others_run(
    serve: Callable[..., Served], pb: ModuleType
) -> None:
    # The loop turns (no stall), so the loop's tick is what finds the event:
    # Kong gets its 500 at about 1 s, while the handler awaits 4 s; another
    # event, on another connection, runs meanwhile.
    served = serve("blocks_loop_async.py", *PROTOBUF, "--handler-timeout", "1")
    slow, other = KongPb.connect(pb, served.socket), KongPb.connect(pb, served.socket)
    try:
        iid = slow.start("blocks_loop_async", '{"seconds": 4, "await": true}')
        quick = other.start("blocks_loop_async", '{"seconds": 0.2, "await": true}')
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            slow_event = pool.submit(slow.event, iid, "access", kong_answers)
            other.event(quick, "access", kong_answers)
            slow_event.result(timeout=10)
            elapsed = time.monotonic() - started
        assert names(other) == ["kong.response.set_header"]
        assert_failed_closed(slow)
        assert elapsed < 3, f"failed closed after {elapsed:.1f} s, not at the tick past 1 s"
        log = served.wait_log("EventAbandoned after the block", timeout=5)
        assert stall_warnings(served) == [], log
    finally:
        slow.close()
        other.close()
