"""Handlers that never return: a deadline, and a full thread pool, fail closed at once (issue 9).

``--handler-timeout S`` (default 0: off) bounds how long a handler may run
without giving Kong anything. A handler past it cannot be killed (it is a
Python thread), but Kong must not wait with it: it gets the same fail-closed
answer as for a handler that raised (a ``kong.log.err`` line, then a 500 in
rewrite/access, or ``ret`` where no response can be sent).

With every handler thread taken (``--max-handler-threads``) a new event is
refused the same way at once, instead of waiting in a queue that may never
move. The server logs a line each time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kong_pdk.testing import KongEmulator, TransportError
from reliability.peers import RawPeer

from serving import Served

pytestmark = pytest.mark.timeout(30)


def test_a_handler_past_the_deadline_fails_the_request_closed(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py", "--handler-timeout", "1")
    with KongEmulator(served.socket, timeout=5) as emu:
        iid = emu.start_instance("stalls", {"mode": "stuck"})
        started = time.monotonic()
        result = emu.handle_event(iid, "access")
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"Kong waited {elapsed:.2f}s"
    assert result.methods == ["kong.log.err", "kong.response.error"], result.methods
    assert "timed out" in str(result.calls[0].args[0])
    assert result.outcome == "error" and result.status == 500
    served.wait_log("timed out", timeout=2)


def test_a_handler_past_the_deadline_in_log_ends_with_ret(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py", "--handler-timeout", "1")
    with KongEmulator(served.socket, timeout=5) as emu:
        iid = emu.start_instance("stalls", {"mode": "stuck"})
        started = time.monotonic()
        result = emu.handle_event(iid, "log")
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"Kong waited {elapsed:.2f}s"
    assert result.methods == ["kong.log.err"], result.methods
    assert "timed out" in str(result.calls[0].args[0])
    assert result.outcome == "ret" and result.terminal is None


def test_no_free_handler_thread_fails_the_next_event_closed_at_once(serve: Callable[..., Served]) -> None:
    served = serve("stalls.py", "--max-handler-threads", "2")
    with KongEmulator(served.socket, timeout=3) as emu:
        by_header = emu.start_instance("stalls", {})
        quick = emu.start_instance("stalls", {"mode": "hello"})
        stuck = [RawPeer(served.socket), RawPeer(served.socket)]
        try:
            for peer in stuck:
                # The handler asks for x-case (so it runs on a thread) and then never returns.
                first = peer.call("plugin.HandleEvent", [{"InstanceId": by_header, "EventName": "access"}])
                assert first[3]["Data"] == {"Method": "kong.request.get_header", "Args": ["x-case"]}
                peer.send([0, 2, "plugin.Step", [{"EventId": first[3]["EventId"], "Data": "stuck"}]])
            started = time.monotonic()
            try:
                result = emu.handle_event(quick, "access")
            except TransportError as e:
                raise AssertionError(f"the third event got no answer within 3s ({e})") from e
            elapsed = time.monotonic() - started
        finally:
            for peer in stuck:
                peer.close()
    assert elapsed < 1.0, f"Kong waited {elapsed:.2f}s"
    assert result.methods == ["kong.log.err", "kong.response.error"], result.methods
    assert "no handler thread" in str(result.calls[0].args[0])
    assert result.outcome == "error" and result.status == 500
    served.wait_log("no handler thread", timeout=2)
