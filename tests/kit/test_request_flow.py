"""A request through all phases: order, ctx.shared, logs, nginx ctx, stream, tls, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kit_helpers import CALLER, call, returned, runner

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.kit.loader import load_plugin
from kong_pdk.testing.kit.request_result import KitFailure
from kong_pdk.testing.kit.schema import ConfigError

HERE = Path(__file__).parent


def test_phases_run_in_kongs_order() -> None:
    r = runner({})
    assert r.http().phases == ["rewrite", "access", "response", "log"]
    assert r.https().phases == ["certificate", "rewrite", "access", "response", "log"]


def test_exit_in_access_skips_upstream_and_response_but_not_log() -> None:
    res = runner({"access": [["kong.response.exit", [403]]]}).http()
    assert res.phases == ["rewrite", "access", "log"]
    assert res.service_request is None
    assert res.client_response is not None and res.client_response.status == 403
    assert res.client_response.headers["server"].startswith("kong/")


def test_ctx_shared_lives_across_phases_of_one_request_only() -> None:
    r = runner(
        {
            "rewrite": [["kong.ctx.shared.set", ["k", {"n": 1, "empty": {}}]], ["kong.ctx.shared.set", ["b", "bytes"]]],
            "access": [["kong.ctx.shared.get", ["k"]]],
            "log": [["kong.ctx.shared.get", ["k"]], ["kong.nginx.get_ctx", ["x"]]],
        }
    )
    res = r.http()
    got = [c.result for c in res.calls if c.method == "kong.ctx.shared.get"]
    # {} comes back [] (protocol.md §11.3).
    assert got == [{"n": 1, "empty": []}, {"n": 1, "empty": []}]
    assert res.ctx == {"k": {"n": 1, "empty": {}}, "b": "bytes"}
    second = r.phase("access")
    assert returned(second, "kong.ctx.shared.get") is None


def test_nginx_ctx_set_and_get() -> None:
    res = runner({"access": [["kong.nginx.set_ctx", ["a", 1]]], "log": [["kong.nginx.get_ctx", ["a"]]]}).http()
    assert returned(res, "kong.nginx.get_ctx") == 1
    assert res.nginx_ctx == {"a": 1}


def test_logs_are_captured_per_level_and_phase() -> None:
    r = runner(
        {
            "access": [
                ["kong.log.err", ["bad ", 1, " ", True]],
                ["kong.log.info", ["hello"]],
                ["kong.log", ["plain"]],
                ["kong.log.inspect", ["a", {"b": 1}]],
                ["kong.log.inspect.off", []],
                ["kong.log.inspect", ["hidden"]],
            ],
            "log": [["kong.log.warn", ["late"]]],
        }
    )
    res = r.http()
    assert [(e.level, e.phase, e.message) for e in res.logs] == [
        ("err", "access", "bad 1 True"),  # True as Python str() renders it, as the official package sends it
        ("info", "access", "hello"),
        ("notice", "access", "plain"),
        ("notice", "access", 'a {"b":1}'),
        ("warn", "log", "late"),
    ]
    assert res.log_messages("err") == ["bad 1 True"]


def test_serialize_is_json_text_in_the_log_phase() -> None:
    res = runner(
        {"access": [["kong.log.set_serialize_value", ["request.extra", "x"]]], "log": [["kong.log.serialize", []]]}
    ).http("POST", "http://x/s?q=1", body="abc")
    text = returned(res, "kong.log.serialize")
    assert isinstance(text, str)  # Kong's shim sends cjson text (protocol.md §6.4)
    data = json.loads(text)
    assert data["request"]["method"] == "POST" and data["request"]["size"] == 3
    assert data["request"]["extra"] == "x"
    assert data["response"]["status"] == 200


def test_single_phase() -> None:
    r = runner({"log": [["kong.response.get_status", []]]})
    res = r.phase("log")
    assert res.phases == ["log"] and returned(res, "kong.response.get_status") == 200
    with pytest.raises(ValueError):
        r.phase("preread")


def test_stream_preread_exit() -> None:
    res = call("preread", "kong.response.exit", 200, "hello", mode="stream")
    assert res.phases == ["preread"] and res.stream_sent == b"hello" and res.status == 200
    res = call("preread", "kong.response.exit", 403, "go away", mode="stream")
    assert res.stream_sent == b"" and res.log_messages("err")
    with pytest.raises(AssertionError, match="unacceptable code"):
        call("preread", "kong.response.exit", 404, mode="stream")
    res = call("preread", "kong.nginx.get_subsystem", mode="stream")
    assert returned(res, "kong.nginx.get_subsystem") == "stream"


def test_tls_certificate_phase() -> None:
    r = runner(
        {
            "certificate": [
                ["kong.client.tls.request_client_certificate", []],
                ["kong.client.tls.disable_session_reuse", []],
                ["kong.client.get_ip", []],
            ]
        }
    )
    res = r.tls("api.example.com")
    assert res.phases == ["certificate"]
    assert res.tls.client_certificate_requested and res.tls.session_reuse_disabled
    assert [c.result for c in res.calls] == [True, True, "127.0.0.1"]


def test_client_tls_in_access() -> None:
    res = call("access", "kong.client.tls.get_full_client_certificate_chain", mode="https", client_certificate="PEM")
    assert returned(res, "kong.client.tls.get_full_client_certificate_chain") == "PEM"
    res = call("access", "kong.client.tls.set_client_verify", "FAILED:expired", mode="https")
    assert res.tls.client_verify == "FAILED:expired"


def test_a_plugin_exception_fails_the_test_with_its_traceback() -> None:
    with pytest.raises(KitFailure, match="TypeError"):
        runner({"access": [["kong.request.get_header", ["a", "b", "c"]]]}).http()
    res = runner({"access": [["kong.request.get_header", ["a", "b", "c"]]]}, strict=False).http()
    assert res.plugin_errors and res.plugin_errors[0].phase == "access"
    # The server decides how a raising handler ends (logged, then "ret" or a 500);
    # the kit shows exactly what it sent.
    ended_with_error = res.events["access"].outcome == "error"
    assert res.client_response is not None
    assert res.client_response.status == (500 if ended_with_error else 200)


def test_a_name_the_pdk_lacks_fails_a_strict_test_and_goes_on_otherwise() -> None:
    # Sent to Kong as it is, as the official package does: Kong logs it and answers nil.
    with pytest.raises(KitFailure, match="kong.request.no_such_function is not a function this Kong has"):
        runner({"access": [["kong.request.no_such_function", []]]}).http()
    res = runner({"access": [["kong.request.no_such_function", []]]}, strict=False).http()
    assert not res.plugin_errors
    assert res.client_response is not None and res.client_response.status == 200


def test_answers_override_a_pdk_function() -> None:
    r = PluginRunner(CALLER, {"calls": json.dumps({"access": [["kong.request.get_header", ["x"]]]})},
                     answers={"kong.request.get_header": lambda name: f"fake-{name}"})
    assert returned(r.http(), "kong.request.get_header") == "fake-x"


CONFIG_CASES = [
    ({"message": 5}, "config.message: expected a string"),
    ({"count": 1.5}, "config.count: expected an integer"),
    ({"unknown": 1}, "config.unknown: unknown field"),
    ({"mode": "z"}, "config.mode: expected one of: a, b"),
    ({"count": 99}, "config.count: value should be between 1 and 10"),
    ({"message": ""}, "config.message: length must be at least 1"),
    ({"limits": {"second": "x"}}, "config.limits.second: expected a number"),
    ({"tags": "x"}, "config.tags: expected an array"),
]

SCHEMA = (
    {"message": {"type": "string", "default": "hi"}},
    {"count": {"type": "integer", "between": [1, 10]}},
    {"mode": {"type": "string", "one_of": ["a", "b"], "default": "a"}},
    {"required_one": {"type": "boolean", "required": True, "default": False}},
    {"tags": {"type": "array", "elements": {"type": "string"}}},
    {"limits": {"type": "record", "fields": [{"second": {"type": "number"}}, {"minute": {"type": "number", "default": 60}}]}},
    {"headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}}},
)


@pytest.mark.parametrize(("config", "message"), CONFIG_CASES)
def test_config_kong_would_refuse(config: dict[str, object], message: str) -> None:
    from kong_pdk.testing.kit.schema import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config(SCHEMA, config)
    assert message in str(info.value)


def test_config_defaults_and_nulls_reach_the_plugin() -> None:
    from kong_pdk.testing.kit.schema import validate_config
    from kong_pdk.testing.kong.lua import NULL

    assert validate_config(SCHEMA, {"count": 2}) == {
        "message": "hi",
        "count": 2,
        "mode": "a",
        "required_one": False,
        "tags": NULL,
        "limits": {"second": NULL, "minute": 60},
        "headers": NULL,
    }
    with pytest.raises(ConfigError, match="required field missing"):
        validate_config(({"x": {"type": "string", "required": True}},), {})


def test_hello_example_refuses_a_bad_config() -> None:
    with pytest.raises(ConfigError, match="expected a string"):
        PluginRunner(load_plugin(HERE.parent.parent / "examples" / "py-hello.py"), {"message": 1})


@pytest.mark.parametrize("kong_version", [(3, 4), (3, 6), (3, 9)])
def test_the_kong_version_of_the_world_is_the_emulators(kong_version: tuple[int, int]) -> None:
    # World.kong_version picks the Kong that plays the request on the wire too
    # (its instance cache, __seq__ and Config keys), not only the fake PDK and headers.
    r = runner({"access": [["kong.request.get_method", []]]}, kong_version=kong_version)
    res = r.http()
    assert res.events["access"].outcome == "ret"
    emu = r.server.emulator("http", kong_version)
    assert emu.kong_version == kong_version
    assert r.plugin_id in emu.instances.snapshot()  # this Kong started the instance
