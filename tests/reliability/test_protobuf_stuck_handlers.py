"""--handler-timeout on ProtoBuf:1's thread model (src/protobuf/timeout.rs).

A handler that holds Kong's request past the limit (no PDK call, no return)
has its event failed closed as if it had raised: ``kong.log.err``, then in
rewrite/access ``kong.response.exit(500, ...)`` (the wire has no
``kong.response.error``), and the event's end, so that the connection serves
Kong's next command while the handler runs on; its later PDK calls raise
``EventAbandoned``. Time the handler spends waiting for Kong does not count.
Driven by a protobuf Kong (tests/pb_kong.py) over the real socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from pb_kong import Call, KongPb, pb2

from serving import Served

pytestmark = pytest.mark.timeout(30)

THREADS = ("--protocol", "protobuf", "--model", "threads")


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return pb2(str(tmp_path_factory.mktemp("pb2")))


def kong_answers(_call: Call) -> Any:
    """Kong's default reply to every call."""
    return None


def names(conn: KongPb) -> list[str]:
    return [c.name for c in conn.calls]


def hello(conn: KongPb, iid: int) -> None:
    """A normal event on `conn`: the handler reads a header and sets one."""
    conn.calls.clear()
    conn.event(iid, "access", kong_answers)
    assert names(conn) == ["kong.request.get_header", "kong.response.set_header"], names(conn)


def test_a_handler_past_the_timeout_fails_closed_and_the_connection_serves_on(
    serve: Callable[..., Served], pb: ModuleType
) -> None:
    served = serve("stalls.py", *THREADS, "--handler-timeout", "1")
    conn = KongPb.connect(pb, served.socket)
    try:
        iid = conn.start("stalls", '{"mode": "sleep-then-call", "seconds": 3}')
        quick = conn.start("stalls", '{"mode": "hello"}')
        started = time.monotonic()
        conn.event(iid, "access", kong_answers)
        elapsed = time.monotonic() - started
        assert names(conn) == ["kong.log.notice", "kong.log.err", "kong.response.exit"], names(conn)
        log_err, exit_call = conn.calls[1:]
        message = log_err.args.values[0].string_value
        assert "stalls access handler timed out" in message, message
        assert exit_call.args.status == 500
        assert elapsed < 2.5, f"Kong waited {elapsed:.1f} s"
        # The same connection serves Kong's next event while the handler sleeps on ...
        hello(conn, quick)
        # ... whose later PDK call raises EventAbandoned and sends nothing.
        log = served.wait_log("EventAbandoned after the sleep", timeout=5)
        assert "timed out" in log
        # Its return leaves the connection to the thread that took it.
        hello(conn, quick)
        assert served.proc.poll() is None
    finally:
        conn.close()


def test_a_handler_past_the_timeout_in_log_gets_only_the_error_logged(
    serve: Callable[..., Served], pb: ModuleType
) -> None:
    served = serve("stalls.py", *THREADS, "--handler-timeout", "1")
    conn = KongPb.connect(pb, served.socket)
    try:
        iid = conn.start("stalls", '{"mode": "sleep-then-call", "seconds": 3}')
        conn.event(iid, "log", kong_answers)
        assert names(conn) == ["kong.log.notice", "kong.log.err"], names(conn)
        assert "stalls log handler timed out" in conn.calls[1].args.values[0].string_value
        served.wait_log("EventAbandoned after the sleep", timeout=5)
        hello(conn, conn.start("stalls", '{"mode": "hello"}'))
    finally:
        conn.close()


def test_time_waiting_for_kong_does_not_count(serve: Callable[..., Served], pb: ModuleType) -> None:
    served = serve("stalls.py", *THREADS, "--handler-timeout", "1")
    conn = KongPb.connect(pb, served.socket)

    def slow_kong(call: Call) -> Any:
        if call.name == "kong.log.notice":
            time.sleep(1.5)
        return None

    try:
        # 1.5 s waiting for Kong, then 0.6 s of the handler's own: in time.
        iid = conn.start("stalls", '{"mode": "sleep-then-call", "seconds": 0.6}')
        conn.event(iid, "access", slow_kong)
        assert names(conn) == ["kong.log.notice", "kong.response.set_header"], names(conn)
        assert "timed out" not in served.log()
    finally:
        conn.close()

