"""examples/py-request-tag.py: kong.ctx.shared across rewrite, access, response and log."""

from __future__ import annotations

from example_paths import EXAMPLES

from kong_pdk.testing.http import Response
from kong_pdk.testing.pytest_plugin import KongKit


def test_tag_travels_through_all_phases(kong: KongKit) -> None:
    tag = kong.plugin(EXAMPLES / "py-request-tag.py")
    res = tag.http("POST", "http://api.test/a/../items", upstream=Response(201, body="made"))
    assert res.phases == ["rewrite", "access", "response", "log"]
    assert res.ctx == {"tag": "POST /items"}
    assert res.service_request is not None
    assert res.service_request.headers["x-request-tag"] == "POST /items"
    assert res.client_response is not None
    assert res.client_response.headers["x-request-tag"] == "POST /items -> 201"
    assert res.client_response.text == "made"
    assert res.log_messages("info") == ["request POST /items ended with 201"]


def test_header_name_is_configurable(kong: KongKit) -> None:
    res = kong.plugin(EXAMPLES / "py-request-tag.py", {"header": "x-trace"}).http()
    assert res.client_response is not None
    assert res.client_response.headers["x-trace"] == "GET / -> 200"


def test_each_request_gets_a_fresh_ctx(kong: KongKit) -> None:
    tag = kong.plugin(EXAMPLES / "py-request-tag.py")
    tag.http("GET", "http://api.test/one")
    res = tag.phase("access", "GET", "http://api.test/two")  # no rewrite: nothing shared yet
    assert res.calls[0].method == "kong.ctx.shared.get" and res.calls[0].result is None
