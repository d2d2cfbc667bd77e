"""The kit runs a ProtoBuf:1 plugin over ProtoBuf:1: the emulator speaks the wire the
plugin declares (docs/protobuf.md), with the fake PDK answering behind Kong's
conversions, in each execution model that serves ProtoBuf:1."""

from __future__ import annotations

from typing import Any

import pytest

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.kit.request_result import KitFailure

from suite_tools import suite_module


class PbHello:
    protocol = "protobuf"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        host, _ = kong.request.get_header("host")
        headers, _ = kong.request.get_headers()
        kong.response.set_header("x-hello", f"hello {host}")
        kong.response.set_header("x-accept", ",".join(headers["accept"]))


class PbDeny:
    protocol = "protobuf"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        kong.response.exit(403, b"denied", {"x-why": "pb"})


class AsyncPbHello:
    protocol = "protobuf"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    async def access(self, kong: Any) -> None:
        host, _ = await kong.request.get_header("host")
        await kong.response.set_header("x-hello", f"hello {host}")


class NeedsMsgpack:
    protocol = "protobuf"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        kong.request.get_body()


def test_a_protobuf_plugin_is_served_and_driven_over_protobuf() -> None:
    runner = PluginRunner(PbHello)
    res = runner.http("GET", "http://example.com/", headers={"accept": ["a/b", "c/d"]})
    assert res.client_response is not None
    assert res.client_response.headers["x-hello"] == "hello example.com"
    assert res.client_response.headers["x-accept"] == "a/b,c/d"
    assert runner.server.http.protocol == "ProtoBuf:1"
    # Kong's side saw each call as Lua gets it from its input message.
    calls = res.events["access"].calls
    assert [c.method for c in calls[:2]] == ["kong.request.get_header", "kong.request.get_headers"]
    assert calls[0].args == ("host",)
    assert calls[1].args == (100,)  # go-pdk's maximum count, sent without one


def test_exit_ends_the_request_with_its_bytes_body() -> None:
    res = PluginRunner(PbDeny).http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.status == 403
    assert res.client_response.body == b"denied"
    assert res.client_response.headers["x-why"] == "pb"


@pytest.mark.parametrize("model", ["threads", "greenlets", "gevent"])
def test_every_model_that_serves_protobuf(model: str) -> None:
    if model == "gevent":
        suite_module("gevent", "pip install 'kong-pdk-native[gevent]'")
    res = PluginRunner(PbHello, model=model).http(  # type: ignore[arg-type]
        "GET", "http://example.com/", headers={"accept": "x/y"}
    )
    assert res.client_response is not None
    assert res.client_response.headers["x-hello"] == "hello example.com"


def test_async_def_handlers_on_the_looped_protobuf_server() -> None:
    res = PluginRunner(AsyncPbHello).http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.headers["x-hello"] == "hello example.com"


def test_a_call_protobuf_lacks_fails_the_test_naming_it() -> None:
    with pytest.raises(KitFailure, match="kong.request.get_body is not available on ProtoBuf:1"):
        PluginRunner(NeedsMsgpack).http("POST", "http://example.com/", body=b"x")
