"""kong.request.*, kong.client.*, kong.router.*, kong.nginx.*, kong.node.*, kong.ip, kong.vault:
what the plugin gets back, as our server decodes Kong's bytes (protocol.md §6).

Each row: (function, arguments, request/world options, expected value).
"""

from __future__ import annotations

from typing import Any

import pytest
from kit_helpers import call, returned

from kong_pdk.testing.fake.world import consumer, default_route, default_service
from kong_pdk.testing.kong.lua import NULL

URL = "http://Example.COM:8000/t/Abc%20123%C3%B8%2f/parent/..//test/./?movie=foo&debug&a=1&a=2&e="
JSON_HEADERS = {"content-type": "application/json"}
ALICE = consumer("alice")
# cjson.null fields arrive as explicit nils (protocol.md §6.3).
ALICE_SEEN = {k: (None if v is NULL else v) for k, v in ALICE.items()}

CASES: list[tuple[str, list[Any], dict[str, Any], Any]] = [
    ("kong.request.get_scheme", [], {"url": URL}, "http"),
    ("kong.request.get_host", [], {"url": URL}, "example.com"),
    ("kong.request.get_port", [], {"url": URL}, 8000),
    ("kong.request.get_method", [], {"method": "PATCH"}, "PATCH"),
    ("kong.request.get_http_version", [], {}, 1.1),
    ("kong.request.get_http_version", [], {"http_version": 2.0}, 2),  # integral: sent as int (§3.2)
    ("kong.request.get_path", [], {"url": URL}, "/t/Abc 123ø%2F/test/"),
    ("kong.request.get_raw_path", [], {"url": URL}, "/t/Abc%20123%C3%B8%2f/parent/..//test/./"),
    (
        "kong.request.get_path_with_query",
        [],
        {"url": URL},
        "/t/Abc%20123%C3%B8%2f/parent/..//test/./?movie=foo&debug&a=1&a=2&e=",
    ),
    ("kong.request.get_raw_query", [], {"url": URL}, "movie=foo&debug&a=1&a=2&e="),
    ("kong.request.get_raw_query", [], {"url": "http://x/"}, ""),
    ("kong.request.get_query_arg", ["movie"], {"url": URL}, "foo"),
    ("kong.request.get_query_arg", ["debug"], {"url": URL}, True),
    ("kong.request.get_query_arg", ["a"], {"url": URL}, "1"),
    ("kong.request.get_query_arg", ["e"], {"url": URL}, ""),
    ("kong.request.get_query_arg", ["nope"], {"url": URL}, None),
    # Multimap (§6.1): strings become lists, a bare flag an empty list.
    ("kong.request.get_query", [], {"url": URL}, {"movie": ["foo"], "debug": [], "a": ["1", "2"], "e": [""]}),
    ("kong.request.get_query", [2], {"url": URL}, {"movie": ["foo"], "debug": []}),
    ("kong.request.get_query", [], {"url": "http://x/?a&a=1"}, {"a": [True, "1"]}),
    ("kong.request.get_query", [], {"url": "http://x/"}, {}),
    ("kong.request.get_query", [], {"url": "http://x/?q=a+b%2Bc"}, {"q": ["a b+c"]}),
    ("kong.request.get_header", ["X-Multi"], {"headers": [("x-multi", "1"), ("X-Multi", "2")]}, "1"),
    ("kong.request.get_header", ["x_multi"], {"headers": [("X-Multi", "1")]}, "1"),
    ("kong.request.get_header", ["missing"], {}, None),
    (
        "kong.request.get_headers",
        [],
        {"url": "http://h/", "headers": [("X-A", "1"), ("x-a", "2"), ("Accept", "*/*")]},
        {"x-a": ["1", "2"], "accept": ["*/*"], "host": ["h"]},
    ),
    ("kong.request.get_raw_body", [], {"body": b"\x00\xff raw"}, b"\x00\xff raw"),  # bin (§6.2)
    ("kong.request.get_raw_body", [], {}, b""),
    ("kong.request.get_body", [], {"body": '{"a":1,"b":[1,2.5],"c":null}', "headers": JSON_HEADERS},
     {"a": 1, "b": [1, 2.5], "c": None}),
    ("kong.request.get_body", [], {"body": "{}", "headers": JSON_HEADERS}, []),  # {} comes back [] (§11.3)
    ("kong.request.get_body", [], {"body": "42", "headers": JSON_HEADERS}, None),  # invalid json body
    ("kong.request.get_body", [], {"form": {"x": "1", "y": ["a", "b"]}}, {"x": "1", "y": ["a", "b"]}),
    ("kong.request.get_body", [], {"body": "x=1&flag", "headers": {"content-type": "application/x-www-form-urlencoded"}},
     {"x": "1", "flag": True}),
    (
        "kong.request.get_body",
        [],
        {
            "body": '--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\nhello\r\n'
            '--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\nagain\r\n'
            '--XX\r\nContent-Disposition: form-data; name="f"; filename="f.txt"\r\n'
            "Content-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=XX"},
        },
        {"a": ["hello", "again"], "f": "file body"},
    ),
    ("kong.request.get_body", ["application/json"], {"body": "[1,2]"}, [1, 2]),
    ("kong.request.get_body", [], {"body": "x"}, None),  # missing content type
    ("kong.request.get_forwarded_scheme", [], {"headers": {"x-forwarded-proto": "HTTPS"}}, "http"),
    ("kong.request.get_forwarded_scheme", [], {"headers": {"x-forwarded-proto": "HTTPS"}, "trusted_ips": ["0.0.0.0/0"]},
     "https"),
    ("kong.request.get_forwarded_host", [], {"headers": {"x-forwarded-host": "u@Front.io:9"}, "trusted_ips": ["127.0.0.1"]},
     "front.io"),
    ("kong.request.get_forwarded_port", [], {"headers": {"x-forwarded-host": "front.io:9"}, "trusted_ips": ["127.0.0.1"]},
     9),
    ("kong.request.get_forwarded_port", [], {"url": "http://x:81/"}, 81),
    ("kong.request.get_forwarded_path", [], {"url": "http://x/a/../b", "headers": {"x-forwarded-path": "/p"}}, "/b"),
    ("kong.request.get_forwarded_prefix", [], {}, None),
    ("kong.request.get_forwarded_prefix", [], {"url": "http://x/api/v1", "route": default_route(paths=["/api"])}, "/api"),
    ("kong.request.get_uri_captures", [], {}, {"unnamed": [], "named": []}),  # empty tables are [] (§3.2)
    ("kong.request.get_uri_captures", [], {"uri_captures": (["v1"], {"ver": "v1"})},
     {"unnamed": ["v1"], "named": {"ver": "v1"}}),
    ("kong.client.get_ip", [], {"client_ip": "10.0.0.7"}, "10.0.0.7"),
    ("kong.client.get_port", [], {"client_port": 51000}, 51000),
    ("kong.client.get_forwarded_ip", [], {"client_ip": "10.0.0.7", "headers": {"x-real-ip": "1.2.3.4"}}, "10.0.0.7"),
    ("kong.client.get_forwarded_ip", [],
     {"client_ip": "10.0.0.7", "headers": {"x-real-ip": "1.2.3.4"}, "trusted_ips": ["10.0.0.0/8"]}, "1.2.3.4"),
    ("kong.client.get_forwarded_port", [], {"client_port": 51000}, 51000),
    ("kong.client.get_protocol", [], {}, "http"),
    ("kong.client.get_consumer", [], {}, None),
    ("kong.client.get_consumer", [], {"consumer": ALICE}, ALICE_SEEN),
    ("kong.client.get_credential", [], {"credential": {"id": "c1", "key": "k"}}, {"id": "c1", "key": "k"}),
    ("kong.client.load_consumer", [ALICE["id"]], {"consumers": [ALICE]}, ALICE_SEEN),
    ("kong.client.load_consumer", ["alice"], {"consumers": [ALICE]}, None),
    ("kong.client.load_consumer", ["alice", True], {"consumers": [ALICE]}, ALICE_SEEN),
    ("kong.router.get_route", [], {"route": None}, None),
    ("kong.router.get_service", [], {}, {k: (None if v is NULL else v) for k, v in default_service().items()}),
    ("kong.ip.is_trusted", ["10.1.2.3"], {"trusted_ips": ["10.0.0.0/8"]}, True),
    ("kong.ip.is_trusted", ["11.1.2.3"], {"trusted_ips": ["10.0.0.0/8"]}, False),
    ("kong.nginx.get_var", ["request_uri"], {"url": "http://x/a?b"}, "/a?b"),
    ("kong.nginx.get_var", ["http_x_thing"], {"headers": {"X-Thing": "t"}}, "t"),
    ("kong.nginx.get_var", ["custom"], {"nginx_vars": {"custom": "v"}}, "v"),
    ("kong.nginx.get_var", ["no_such_var"], {}, None),
    ("kong.nginx.get_subsystem", [], {}, "http"),
    ("kong.nginx.get_tls1_version_str", [], {}, None),
    ("kong.nginx.get_tls1_version_str", [], {"mode": "https"}, "TLSv1.3"),
    ("kong.node.get_hostname", [], {"hostname": "edge-1"}, "edge-1"),
    ("kong.node.get_id", [], {"node_id": "6b2f0c36-0000-4000-8000-000000000001"}, "6b2f0c36-0000-4000-8000-000000000001"),
    ("kong.cluster.get_id", [], {"cluster_id": "c-1"}, "c-1"),
    ("kong.vault.get", ["{vault://env/secret}"], {"vault": {"{vault://env/secret}": "s3cr3t"}}, "s3cr3t"),
    ("kong.vault.get", ["{vault://env/none}"], {}, None),
    ("kong.vault.is_reference", ["{vault://env/x}"], {}, True),
    ("kong.vault.is_reference", ["plain"], {}, False),
    ("kong.vault.parse_reference", ["{vault://env/db/password/2}"], {},
     {"name": "env", "resource": "db", "key": "password", "version": 2}),
    ("kong.vault.update", [{"pw": "{vault://env/p}", "n": 1}], {"vault": {"{vault://env/p}": "x"}}, {"pw": "x", "n": 1}),
    ("kong.table.new", [], {}, []),
    ("kong.table.merge", [{"a": 1}, {"b": 2}], {}, {"a": 1, "b": 2}),
    ("kong.plugin.get_id", [], {}, "<plugin id>"),
]


@pytest.mark.parametrize(("method", "args", "options", "expected"), CASES, ids=[c[0] for c in CASES])
def test_what_the_plugin_gets(method: str, args: list[Any], options: dict[str, Any], expected: Any) -> None:
    res = call("access", method, *args, **options)
    got = returned(res, method)
    if expected == "<plugin id>":
        expected = res.exchange.plugin_id
    assert got == expected
    assert type(got) is type(expected)  # 2 stays an int, b"" stays bytes


def test_start_times_are_milliseconds_and_seconds() -> None:
    res = call("access", "kong.request.get_start_time")
    ms = returned(res, "kong.request.get_start_time")
    res2 = call("log", "kong.nginx.req_start_time")
    s = returned(res2, "kong.nginx.req_start_time")
    assert ms > 1e12 and 1e9 < s < 1e11


def test_memory_stats_use_units() -> None:
    res = call("access", "kong.node.get_memory_stats", "m", 1)
    stats = returned(res, "kong.node.get_memory_stats")
    assert stats["lua_shared_dicts"]["kong"]["capacity"] == "5.0 MiB"
    assert res.calls[0].result is not None
    with pytest.raises(AssertionError, match="invalid unit"):
        call("access", "kong.node.get_memory_stats", "x")


def test_limits_are_checked_like_kong() -> None:
    with pytest.raises(AssertionError, match="max_headers must be <= 1000"):
        call("access", "kong.request.get_headers", 1001)
    with pytest.raises(AssertionError, match="max_args must be >= 1"):
        call("access", "kong.request.get_query", 0)
    with pytest.raises(AssertionError, match="header name must be a string"):
        call("access", "kong.request.get_header", 5)


def test_authenticate_sets_consumer_and_credential_for_later_phases() -> None:
    from kit_helpers import runner

    r = runner(
        {
            "access": [["kong.client.authenticate", [{"id": "c", "username": "bob"}, {"id": "k"}]]],
            "log": [["kong.client.get_consumer", []], ["kong.client.get_credential", []]],
        }
    )
    res = r.http()
    assert returned(res, "kong.client.get_consumer") == {"id": "c", "username": "bob"}
    assert returned(res, "kong.client.get_credential") == {"id": "k"}
    assert res.consumer == {"id": "c", "username": "bob"}
    with pytest.raises(AssertionError, match="either credential or consumer must be provided"):
        call("access", "kong.client.authenticate")
