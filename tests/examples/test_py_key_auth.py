"""examples/py-key-auth.py: exit and error bodies, authentication, hidden credentials."""

from __future__ import annotations

import pytest
from example_paths import EXAMPLES

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.pytest_plugin import KongKit
from kong_pdk.testing.schema import ConfigError


@pytest.fixture
def auth(kong: KongKit) -> PluginRunner:
    return kong.plugin(EXAMPLES / "py-key-auth.py", {"keys": {"k-123": "alice"}})


def test_no_key_gets_kongs_401_error_page(auth: PluginRunner) -> None:
    res = auth.http("GET", "http://api.test/")
    cr = res.client_response
    assert cr is not None and cr.status == 401
    assert cr.headers["www-authenticate"] == 'Key realm="kong"'
    assert cr.headers["content-type"] == "application/json; charset=utf-8"
    assert cr.json() == {"message": "No API key found in request", "request_id": res.exchange.request_id}
    assert res.service_request is None


def test_no_key_error_page_follows_accept(auth: PluginRunner) -> None:
    res = auth.http("GET", "http://api.test/", {"Accept": "text/html"})
    assert res.client_response is not None
    assert res.client_response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<p>No API key found in request.</p>" in res.client_response.text


def test_wrong_key_gets_a_json_401(auth: PluginRunner) -> None:
    res = auth.http("GET", "http://api.test/", {"apikey": "nope"})
    assert res.client_response is not None
    assert res.client_response.status == 401
    assert res.client_response.body == b'{"message":"Invalid authentication credentials"}'


def test_good_key_authenticates_and_is_hidden_upstream(auth: PluginRunner) -> None:
    res = auth.http("GET", "http://api.test/orders", {"apikey": "k-123"})
    assert res.client_response is not None and res.client_response.status == 200
    assert res.consumer == {"username": "alice"}
    assert res.credential == {"key": "k-123"}
    sr = res.service_request
    assert sr is not None
    assert sr.headers["x-consumer-username"] == "alice"
    assert "apikey" not in sr.headers


def test_keys_are_required(kong: KongKit) -> None:
    with pytest.raises(ConfigError, match="config.keys: required field missing"):
        kong.plugin(EXAMPLES / "py-key-auth.py", {})
