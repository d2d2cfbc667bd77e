"""kong.service.*, kong.service.request.* and kong.service.response.*: what goes upstream."""

from __future__ import annotations

from typing import Any

import pytest
from kit_helpers import call, returned, runner

from kong_pdk.testing.fake.world import default_route, default_service
from kong_pdk.testing.http import Response, ServiceRequest


def upstream_of(*calls: list[Any], **options: Any) -> ServiceRequest:
    res = runner({"access": [list(c) for c in calls]}, **{k: v for k, v in options.items() if k in ("route", "service", "trusted_ips", "upstreams")}).http(
        **{k: v for k, v in options.items() if k not in ("route", "service", "trusted_ips", "upstreams")}
    )
    assert res.service_request is not None
    return res.service_request


def test_default_upstream_request_is_what_kong_sends() -> None:
    sr = upstream_of(url="http://Example.com/a/b?x=1", headers={"Connection": "close", "X-Keep": "k"}, client_ip="9.9.9.9")
    assert (sr.method, sr.scheme, sr.host, sr.port, sr.path, sr.raw_query) == ("GET", "http", "upstream.test", 80, "/a/b", "x=1")
    assert sr.headers["host"] == "upstream.test"
    assert sr.headers["x-keep"] == "k"
    assert "connection" not in sr.headers
    assert sr.headers["x-forwarded-for"] == "9.9.9.9"
    assert sr.headers["x-forwarded-host"] == "example.com"
    assert sr.headers["x-real-ip"] == "9.9.9.9"


def test_router_strip_path_and_service_path() -> None:
    sr = upstream_of(
        url="http://x/api/users?id=1",
        route=default_route(paths=["/api"]),
        service=dict(default_service(), path="/v2"),
    )
    assert sr.path == "/v2/users"
    assert sr.headers["x-forwarded-prefix"] == "/api"


SETTER_CASES: list[tuple[list[Any], str, Any]] = [
    (["kong.service.request.set_scheme", ["https"]], "scheme", "https"),
    (["kong.service.request.set_path", ["/new/path"]], "path", "/new/path"),
    (["kong.service.request.set_raw_query", ["a=1&b"]], "raw_query", "a=1&b"),
    (["kong.service.request.set_query", [{"foo": "hello world", "bar": ["baz", "bla", True], "zzz": True, "blo": ""}]],
     "raw_query", "bar=baz&bar=bla&bar&blo=&foo=hello%20world&zzz"),
    (["kong.service.request.set_method", ["DELETE"]], "method", "DELETE"),
    (["kong.service.request.set_raw_body", ["raw"]], "body", b"raw"),
    (["kong.service.set_target", ["10.0.0.1", 8080]], "port", 8080),
    (["kong.service.set_retries", [2]], "retries", 2),
    (["kong.service.set_timeouts", [1, 2, 3]], "timeouts", (1, 2, 3)),
    (["kong.service.set_upstream", ["backend"]], "upstream", "backend"),
    (["kong.service.set_tls_verify", [True]], "tls_verify", True),
    (["kong.service.set_tls_verify_depth", [3]], "tls_verify_depth", 3),
]


@pytest.mark.parametrize(("step", "attr", "expected"), SETTER_CASES, ids=[c[0][0] for c in SETTER_CASES])
def test_setters_change_the_upstream_request(step: list[Any], attr: str, expected: Any) -> None:
    assert getattr(upstream_of(step), attr) == expected


def test_header_setters() -> None:
    sr = upstream_of(
        ["kong.service.request.set_header", ["X-A", "1"]],
        ["kong.service.request.add_header", ["x-a", "2"]],
        ["kong.service.request.set_headers", [{"X-B": ["b1", "b2"]}]],
        ["kong.service.request.clear_header", ["x-drop"]],
        ["kong.service.request.set_header", ["Host", "api.internal"]],
        headers={"X-Drop": "d"},
    )
    assert sr.headers.get_all("x-a") == ["1", "2"]
    assert sr.headers.get_all("x-b") == ["b1", "b2"]
    assert "x-drop" not in sr.headers
    assert sr.headers["host"] == "api.internal"


def test_service_request_changes_show_in_kong_request_getters() -> None:
    # They go through ngx.req.*, the same request Kong reads from.
    res = runner(
        {
            "access": [
                ["kong.service.request.set_header", ["x-a", "new"]],
                ["kong.request.get_header", ["x-a"]],
                ["kong.service.request.set_method", ["PUT"]],
                ["kong.request.get_method", []],
            ]
        }
    ).http(headers={"x-a": "old"})
    assert [c.result for c in res.calls if c.method.startswith("kong.request")] == ["new", "PUT"]


@pytest.mark.parametrize(
    ("args", "content_type", "body"),
    [
        ([{"a": "1", "b": ["x", "y"]}, "application/x-www-form-urlencoded"], "application/x-www-form-urlencoded", b"a=1&b=x&b=y"),
        ([{"n": 1, "l": [1, 2]}, "application/json"], "application/json", b'{"n":1,"l":[1,2]}'),
        ([{"b": "2", "a": "1"}, "multipart/form-data; boundary=B"], "multipart/form-data; boundary=B",
         b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B\r\nContent-Disposition: form-data; name="b"\r\n\r\n2\r\n--B--\r\n'),
    ],
)
def test_set_body_encodes_by_mime_type(args: list[Any], content_type: str, body: bytes) -> None:
    sr = upstream_of(["kong.service.request.set_body", args])
    assert sr.headers["content-type"] == content_type
    assert sr.body == body
    assert sr.headers["content-length"] == str(len(body))


def test_set_body_without_content_type_returns_nil() -> None:
    res = call("access", "kong.service.request.set_body", {"a": 1})
    assert returned(res, "kong.service.request.set_body") is None


def test_setter_arguments_are_checked() -> None:
    with pytest.raises(AssertionError, match="invalid scheme: ftp"):
        call("access", "kong.service.request.set_scheme", "ftp")
    with pytest.raises(AssertionError, match="path must start with /"):
        call("access", "kong.service.request.set_path", "relative")
    with pytest.raises(AssertionError, match="invalid method: get"):
        call("access", "kong.service.request.set_method", "get")
    res = call("access", "kong.service.set_upstream", "nope", upstreams=["known"])
    assert returned(res, "kong.service.set_upstream") is None


def test_service_response_getters_read_the_upstream_response() -> None:
    # For an external plugin Kong refuses these in the log timer (protocol.md §5.4;
    # test_pdk_coverage checks that), so their values are checked on the exchange.
    from kong_pdk.testing.fake.exchange import Exchange
    from kong_pdk.testing.fake.registry import IMPLS
    from kong_pdk.testing.fake.world import World
    from kong_pdk.testing.http import Request
    from kong_pdk.testing.kong.lua import LuaMulti

    ex = Exchange.begin(Request(), World())
    assert IMPLS["kong.service.response.get_status"](ex) is None
    ex.upstream_response = Response(202, {"X-Up": "1", "Content-Type": "application/json"}, '{"ok":true}')
    assert IMPLS["kong.service.response.get_status"](ex) == 202
    assert IMPLS["kong.service.response.get_headers"](ex) == {"x-up": "1", "content-type": "application/json"}
    assert IMPLS["kong.service.response.get_header"](ex, "X-UP") == "1"
    assert IMPLS["kong.service.response.get_raw_body"](ex) == b'{"ok":true}'
    assert IMPLS["kong.service.response.get_body"](ex) == LuaMulti({"ok": True}, None, "application/json")


def test_an_upstream_function_sees_the_service_request() -> None:
    seen: list[ServiceRequest] = []

    def upstream(sr: ServiceRequest) -> Response:
        seen.append(sr)
        return Response(200, body="from upstream")

    res = runner({}).http("POST", "http://x/p", body="data", upstream=upstream)
    assert seen[0].body == b"data" and seen[0].method == "POST"
    assert res.client_response is not None and res.client_response.text == "from upstream"


def test_echo_upstream_describes_the_request() -> None:
    res = runner({"access": [["kong.service.request.set_header", ["x-added", "yes"]]]}).http("PUT", "http://x/e?q=1", body="b")
    assert res.client_response is not None
    echoed = res.client_response.json()
    assert isinstance(echoed, dict)
    assert (echoed["method"], echoed["path"], echoed["query"], echoed["body"]) == ("PUT", "/e", "q=1", "b")
    assert echoed["headers"]["x-added"] == "yes"
