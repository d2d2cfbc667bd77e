"""The kit runs a plugin under each execution model of the command line.

``model="auto"`` (no flag: greenlets for a plugin known not to block,
threads otherwise; ``async def`` phases on the asyncio loop), ``"threads"``
and ``"greenlets"`` (``--model``), ``"gevent"`` (``-g``) and ``"processes"``
(``-m N``), each through the same ``build_server`` selection the command line
uses.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.kit.request_result import KitFailure

from suite_tools import suite_module

HELLO = Path(__file__).resolve().parents[2] / "examples" / "py-hello.py"


class WhereItRan:
    """Says in a header which thread (or greenlet) ran its handler."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        where = threading.current_thread().name
        try:
            import gevent

            if isinstance(gevent.getcurrent(), gevent.Greenlet):
                where = "greenlet"
        except ImportError:
            pass
        kong.response.set_header("x-ran-in", where)


class AsyncWhereItRan:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def access(self, kong: Any) -> None:
        await kong.response.set_header("x-ran-in", threading.current_thread().name)


class AsyncRaises:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def access(self, kong: Any) -> None:
        await kong.request.get_path()
        raise RuntimeError("async boom")


def ran_in(runner: PluginRunner) -> str:
    res = runner.http("GET", "http://h.test/")
    assert res.client_response is not None
    return res.client_response.headers["x-ran-in"]


def test_threads_run_sync_handlers_on_a_pool_thread() -> None:
    # This module imports threading and pytest: auto keeps it on threads.
    assert ran_in(PluginRunner(WhereItRan)) not in ("MainThread", "greenlet", "kong-pdk-greenlets")
    assert ran_in(PluginRunner(WhereItRan, model="threads")) not in ("MainThread", "kong-pdk-greenlets")


def test_greenlets_run_sync_handlers_on_the_loop_thread() -> None:
    assert ran_in(PluginRunner(WhereItRan, model="greenlets")) == "kong-pdk-greenlets"


def test_auto_runs_a_pure_plugin_file_on_greenlets() -> None:
    runner = PluginRunner(str(HELLO), {"message": "hi"})
    res = runner.http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.headers["x-hello-from-python"] == "Python says hi to example.com"
    assert runner.server.server.model == "greenlets"


def test_async_handlers_run_on_the_asyncio_loop() -> None:
    assert ran_in(PluginRunner(AsyncWhereItRan)) == "kong-pdk-asyncio"


def test_an_async_handler_that_raises_fails_the_test_with_its_traceback() -> None:
    with pytest.raises(KitFailure, match="async boom"):
        PluginRunner(AsyncRaises).http("GET", "http://h.test/")


def test_gevent_runs_handlers_in_greenlets() -> None:
    suite_module("gevent", "pip install 'kong-pdk-native[gevent]'")
    assert ran_in(PluginRunner(WhereItRan, model="gevent")) == "greenlet"


def test_processes_run_handlers_in_worker_processes() -> None:
    runner = PluginRunner(str(HELLO), {"message": "hi"}, model="processes", workers=2)
    res = runner.http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.headers["x-hello-from-python"] == "Python says hi to example.com"
    assert res.client_response.headers["x-python-pid"] != str(os.getpid())


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="model must be one of auto, threads, greenlets, gevent, processes"):
        PluginRunner(WhereItRan, model="fibers").http()  # type: ignore[arg-type]


def test_processes_need_a_plugin_file() -> None:
    with pytest.raises(ValueError, match="model='processes' runs the plugin file again"):
        PluginRunner(WhereItRan, model="processes").http()
