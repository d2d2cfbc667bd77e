"""examples/py-body-transform.py: get_body by content type, set_body, exit with a table."""

from __future__ import annotations

import json

import pytest
from example_paths import EXAMPLES

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.pytest_plugin import KongKit


@pytest.fixture
def transform(kong: KongKit) -> PluginRunner:
    return kong.plugin(EXAMPLES / "py-body-transform.py", {"remove": ["password"], "add": {"source": "kong"}})


def test_json_body_is_rewritten(transform: PluginRunner) -> None:
    res = transform.http("POST", "http://api.test/users", json={"user": "bob", "password": "x", "n": 1})
    sr = res.service_request
    assert sr is not None
    assert json.loads(sr.body) == {"user": "bob", "n": 1, "source": "kong"}
    assert sr.headers["content-length"] == str(len(sr.body))
    assert sr.headers["content-type"] == "application/json"


def test_empty_object_arrives_as_an_empty_list_and_is_handled(transform: PluginRunner) -> None:
    res = transform.http("POST", "http://api.test/", json={})
    assert res.calls_to("kong.request.get_body")[0].result == []  # protocol.md §11.3
    assert res.service_request is not None
    assert json.loads(res.service_request.body) == {"source": "kong"}


def test_non_object_json_is_refused(transform: PluginRunner) -> None:
    res = transform.http("POST", "http://api.test/", json=[1, 2])
    assert res.client_response is not None
    assert res.client_response.status == 400
    assert res.client_response.json() == {"message": "expected a JSON object"}


def test_other_content_types_pass_untouched(transform: PluginRunner) -> None:
    res = transform.http("POST", "http://api.test/", form={"password": "x"})
    assert res.service_request is not None
    assert res.service_request.body == b"password=x"
    assert res.methods == ["kong.request.get_header"]
