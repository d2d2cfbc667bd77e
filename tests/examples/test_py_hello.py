"""examples/py-hello.py, tested with the kit as a plugin author would."""

from __future__ import annotations

import os

import pytest
from example_paths import EXAMPLES

from kong_pdk.testing.pytest_plugin import KongKit
from kong_pdk.testing.schema import ConfigError


def test_greets_the_host(kong: KongKit) -> None:
    hello = kong.plugin(EXAMPLES / "py-hello.py", {"message": "bonjour"})
    res = hello.http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.status == 200
    assert res.client_response.headers["x-hello-from-python"] == "Python says bonjour to example.com"
    assert res.client_response.headers["x-python-pid"] == str(os.getpid())  # served in-process
    assert res.methods == ["kong.request.get_header", "kong.response.set_header", "kong.response.set_header"]
    assert res.service_request is not None and res.service_request.path == "/"


def test_default_message(kong: KongKit) -> None:
    res = kong.plugin(EXAMPLES / "py-hello.py").http("GET", "http://api.test/x")
    assert res.client_response is not None
    assert res.client_response.headers["x-hello-from-python"] == "Python says hello to api.test"


def test_only_the_access_phase_runs(kong: KongKit) -> None:
    res = kong.plugin(EXAMPLES / "py-hello.py").https("GET", "https://example.com/")
    assert res.phases == ["access"]
    assert not res.logs and not res.violations


def test_config_is_checked(kong: KongKit) -> None:
    with pytest.raises(ConfigError, match=r"config.message: expected a string"):
        kong.plugin(EXAMPLES / "py-hello.py", {"message": ["not", "a", "string"]})
    with pytest.raises(ConfigError, match="unknown field"):
        kong.plugin(EXAMPLES / "py-hello.py", {"mesage": "typo"})
