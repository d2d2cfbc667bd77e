"""The same behaviours under each execution model: threads (default; this
plugin may block, so ``--model auto`` keeps it on threads), greenlets on one
loop thread (``--model greenlets``),
asyncio (``async def`` handlers: the loop owns the socket), asyncio next to a
plain ``def`` phase (bridged to the core's I/O threads), gevent (``-g``, the
hub owns the socket) and worker processes (``-m 2``: the core relays every
event to one of two worker processes, which run the handlers on threads or,
for ``async def`` ones, on asyncio)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kong_pdk.testing import KongEmulator, RpcError

from helpers import case, headers, wait_idle
from serving import Served
from suite_tools import suite_module

MODELS = {
    "thread": ("behaviours.py", ()),
    "asyncio": ("behaviours_async.py", ()),
    "asyncio-mixed": ("behaviours_mixed.py", ()),
    "gevent": ("behaviours.py", ("-g",)),
    "greenlets": ("behaviours.py", ("--model", "greenlets")),
    "processes": ("behaviours.py", ("-m", "2")),
    # The workers choose their own model per phase: asyncio here.
    "processes-asyncio": ("behaviours_async.py", ("-m", "2")),
}


@pytest.fixture(params=list(MODELS))
def served(request: pytest.FixtureRequest, serve: Callable[..., Served]) -> Served:
    if request.param == "gevent":
        suite_module("gevent", "pip install 'kong-pdk-native[gevent]'")
    plugin, args = MODELS[request.param]
    return serve(plugin, "--event-timeout", "2", *args, name="behaviours")


@pytest.fixture
def emu(served: Served) -> Iterator[KongEmulator]:
    with KongEmulator(served.socket) as e:
        yield e


def test_plain_event(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "access", answers=case("hi"))
    assert result.outcome == "ret"
    assert result.calls[-1].args == ("x-case", "hi")


def test_exit(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "access", answers=case("exit"))
    assert (result.outcome, result.status, result.body) == ("exit", 403, "denied")
    assert "kong.log.err" not in result.methods


def test_raise_is_logged_to_kong_and_fails_closed(served: Served, emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "access", answers=case("raise"))
    assert result.outcome == "error" and result.status == 500
    assert "RuntimeError: plugin bug" in str(result.calls_to("kong.log.err")[0].args[0])
    assert "Traceback" in served.wait_log("RuntimeError: plugin bug")


def test_lua_style_tuple(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "access", answers=case("error-tuple"))
    assert result.calls[-1].args == ("x-result", "(None, None)")


def test_log_anything(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "access", answers=case("log-anything"))
    assert result.calls_to("kong.log.info")[0].args[2] == "{1, 2}"


def test_sync_log_phase(emu: KongEmulator) -> None:
    assert emu.run_phase("behaviours", {}, "log").methods == ["kong.log.notice"]


def needs_blocking_handlers_to_overlap(request: pytest.FixtureRequest) -> None:
    """Skips (saying why) under ``--model greenlets``, where a handler that
    blocks holds the loop by design: that model is for plugins that never do."""
    if request.node.callspec.params.get("served") == "greenlets":
        pytest.skip("--model greenlets: a blocking handler (time.sleep, a socket read) holds the loop by design")


def test_64_events_in_flight(request: pytest.FixtureRequest, emu: KongEmulator) -> None:
    needs_blocking_handlers_to_overlap(request)
    n = 64
    barrier = threading.Barrier(n, timeout=30)

    def get_header(name: str) -> object:
        if name == "x-step-0":
            barrier.wait()
        return {"x-case": "wait"}.get(name)

    iid = emu.start_instance("behaviours", {})
    with ThreadPoolExecutor(n) as pool:
        results = list(
            pool.map(lambda _: emu.handle_event(iid, "access", answers={"kong.request.get_header": get_header}), range(n))
        )
    assert all(r.outcome == "ret" for r in results)
    assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_blocking_io_of_many_events_overlaps(request: pytest.FixtureRequest, emu: KongEmulator, tmp_path: Path) -> None:
    needs_blocking_handlers_to_overlap(request)
    # A server that answers only once all n clients are connected at once: the
    # handlers' blocking reads must overlap (greenlets yield under -g).
    n = 16
    path = str(tmp_path / "io.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(n)
    listener.settimeout(30)

    def serve_io() -> None:
        conns = [listener.accept()[0] for _ in range(n)]
        for c in conns:
            c.sendall(b"all-connected\n")
            c.close()

    t = threading.Thread(target=serve_io)
    t.start()
    answers = {"kong.request.get_header": headers({"x-case": "io", "x-io-socket": path})}
    iid = emu.start_instance("behaviours", {})
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda _: emu.handle_event(iid, "access", answers=answers), range(n)))
    t.join(30)
    listener.close()
    assert [r.calls[-1].args for r in results] == [("x-io", "all-connected")] * n


def test_abandoned_event_is_reclaimed(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
    assert isinstance(first, dict)
    emu.call("plugin.Step", [{"EventId": first["EventId"], "Data": "abandon"}])
    served.wait_log("abandoned")
    assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}
    with pytest.raises(RpcError):
        emu.call("plugin.Step", [{"EventId": first["EventId"]}])
    assert emu.handle_event(iid, "access", answers=case("ok")).outcome == "ret"


def test_many_events_every_ending_leave_nothing(emu: KongEmulator) -> None:
    endings = {"plain": "ret", "exit": "exit", "raise": "error"}
    iid = emu.start_instance("behaviours", {})

    def one(i: int) -> str:
        name = list(endings)[i % 3]
        result = emu.handle_event(iid, "access", answers=case(name))
        assert result.outcome == endings[name]
        return result.outcome

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(900)))
    assert outcomes.count("error") == 300
    assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_sigterm_drains(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
    assert isinstance(first, dict)
    served.proc.terminate()
    served.wait_log("draining")
    step = emu.call("plugin.Step", [{"EventId": first["EventId"], "Data": "plain"}])
    assert isinstance(step, dict)
    emu.call("plugin.Step", [{"EventId": first["EventId"]}])
    assert served.proc.wait(15) == 0
    assert not os.path.exists(served.socket)
