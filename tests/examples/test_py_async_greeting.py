"""examples/py-async-greeting.py: async def phases, run by the kit as the server runs them."""

from __future__ import annotations

import time

import pytest
from example_paths import EXAMPLES

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.pytest_plugin import KongKit

PLUGIN = EXAMPLES / "py-async-greeting.py"


@pytest.fixture
def greeting(kong: KongKit) -> PluginRunner:
    return kong.plugin(PLUGIN, {"message": "bonjour", "delay_ms": 20})


def test_async_access_is_awaited(greeting: PluginRunner) -> None:
    started = time.monotonic()
    res = greeting.http("GET", "http://example.com/")
    assert time.monotonic() - started >= 0.02  # the asyncio.sleep ran
    assert res.client_response is not None
    assert res.client_response.headers["x-greeting"] == "bonjour, example.com"
    assert res.methods == [
        "kong.request.get_header",
        "kong.response.set_header",
        "kong.ctx.shared.set",
        "kong.ctx.shared.get",
        "kong.log.notice",
    ]
    assert res.log_messages("notice") == ["greeted: bonjour, example.com"]


def test_exit_from_an_async_handler(kong: KongKit) -> None:
    runner = kong.plugin(PLUGIN, answers={"kong.request.get_header": None})
    res = runner.http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.status == 400
    assert res.client_response.json() == {"message": "a host header is needed"}
    assert res.service_request is None


@pytest.mark.parametrize("model", ["threads", "processes"])
def test_runs_under_the_models_that_take_async(kong: KongKit, model: str) -> None:
    runner = kong.plugin(PLUGIN, {"message": "hi"}, model=model)
    res = runner.http("GET", "http://h.test/")
    assert res.client_response is not None
    assert res.client_response.headers["x-greeting"] == "hi, h.test"


def test_gevent_refuses_async_handlers_as_the_cli_does(kong: KongKit) -> None:
    runner = kong.plugin(PLUGIN, model="gevent")
    with pytest.raises(ValueError, match="cannot run under gevent"):
        runner.http("GET", "http://h.test/")
