"""Which model runs plain ``def`` handlers (``--model``, default ``auto``).

``auto`` runs a plugin as greenlets on one loop thread only when its module's
code is known not to block (``kong_pdk.blocking``), and on threads otherwise;
``--model threads`` and ``--model greenlets`` override it. The choice is read
from the server's log, and the plugin is served either way.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from kong_pdk.blocking import _scan
from kong_pdk.serve import PluginDefinition, _on_greenlets, build_server
from kong_pdk.testing import KongEmulator

from helpers import plugin_class
from serving import Served

PURE = """
    import json, re, hashlib
    import time
    from urllib.parse import quote
    from time import monotonic
    import kong_pdk.pdk.kong as kong

    class Plugin:
        def access(self, kong):
            kong.response.set_header("x-t", str(time.time() + monotonic()))
            print(json.dumps({"q": quote("a b")}))
"""


def reason(source: str) -> str | None:
    return _scan(ast.parse(textwrap.dedent(source)))


def test_pure_code_is_known_not_to_block() -> None:
    assert reason(PURE) is None


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("import requests", "it imports requests"),
        ("import urllib.request", "it imports urllib.request"),
        ("from urllib import request", "it imports request from urllib"),
        ("from . import helpers", "it imports . (a module of its own)"),
        ("from time import sleep", "it imports sleep from time"),
        ("import time\ntime.sleep(1)", "it uses time.sleep (line 2)"),
        ("import time as t\nt.sleep(1)", "it uses time.sleep (line 2)"),
        ("import os\nos.system('x')", "it uses os.system (line 2)"),
        ("import time\nf = time\n", "it passes the module time around (line 2)"),
        ("def f():\n    return open('x').read()", "it calls open() (line 2)"),
        ("__import__('socket')", "it calls __import__() (line 1)"),
    ],
)
def test_anything_that_may_block_is_named(source: str, why: str) -> None:
    assert reason(source) == why


def test_os_getenv_and_os_path_do_not_block() -> None:
    assert reason("import os\nimport os.path\nx = os.getenv('A') or os.path.join('a', 'b')") is None


def model_line(served: Served) -> str:
    log = served.wait_log("handlers run ")
    return next(line for line in log.splitlines() if "handlers run " in line)


def test_auto_runs_a_pure_plugin_as_greenlets(serve: Callable[..., Served]) -> None:
    served = serve("py-hello.py")
    assert "plugin py-hello: handlers run as greenlets on one loop thread" in model_line(served)
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("py-hello", {}, "access")
    assert result.outcome == "ret"
    assert any(c.method == "kong.response.set_header" for c in result.calls)


def test_auto_keeps_a_plugin_that_may_block_on_threads(serve: Callable[..., Served]) -> None:
    served = serve("behaviours.py")
    assert (
        "plugin behaviours: handlers run on threads, as its code may block: it imports socket" in model_line(served)
    )


def test_model_threads_overrides_auto(serve: Callable[..., Served]) -> None:
    served = serve("py-hello.py", "--model", "threads")
    log = served.wait_log("serving")
    assert "greenlets" not in log
    with KongEmulator(served.socket) as emu:
        assert emu.run_phase("py-hello", {}, "access").outcome == "ret"


def test_a_plugin_folder_runs_on_greenlets_only_if_every_plugin_is_pure(tmp_path: Path) -> None:
    pure = plugin_class(tmp_path, "choice_pure", PURE)
    risky = plugin_class(tmp_path, "choice_risky", "import socket\nclass Plugin:\n    pass\n")
    assert _on_greenlets([PluginDefinition("a", pure)], "auto")
    assert not _on_greenlets([PluginDefinition("a", pure), PluginDefinition("b", risky)], "auto")
    assert _on_greenlets([PluginDefinition("b", risky)], "greenlets")
    assert not _on_greenlets([PluginDefinition("a", pure)], "threads")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "greenlets"),
        ({"model": "threads"}, "threads"),
        ({"gevent": True}, "gevent"),
    ],
)
def test_the_core_is_told_the_model_by_name(tmp_path: Path, options: dict[str, object], expected: str) -> None:
    if options.get("gevent"):
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    pure = plugin_class(tmp_path, "choice_named", PURE)
    server = build_server("named", pure, str(tmp_path / "n.socket"), **options)  # type: ignore[arg-type]
    assert server.model == expected


def test_the_core_refuses_an_unknown_model_or_a_runner_it_does_not_use(tmp_path: Path) -> None:
    from kong_pdk import _core

    with pytest.raises(ValueError, match="unknown execution model 'fibers': one of threads, mixed, asyncio"):
        _core.PluginServer([], str(tmp_path / "x.socket"), model="fibers")
    with pytest.raises(ValueError, match="the threads model takes no runner"):
        _core.PluginServer([], str(tmp_path / "x.socket"), model="threads", runner=object())
