"""kong.response.* and the terminal calls: status, headers, Kong's exit and error bodies."""

from __future__ import annotations

from typing import Any

import pytest
from kit_helpers import call, returned, runner

from kong_pdk.testing.http import Response

EXIT_CASES: list[tuple[list[Any], int, dict[str, str], bytes]] = [
    ([403, "denied"], 403, {"content-length": "6"}, b"denied"),
    ([200, {"message": "ok", "n": 2}], 200, {"content-type": "application/json; charset=utf-8"},
     b'{"message":"ok","n":2}'),
    ([200, {}], 200, {"content-type": "application/json; charset=utf-8", "content-length": "2"}, b"{}"),
    ([200, []], 200, {"content-length": "2"}, b"{}"),  # an empty Lua table is an object for cjson
    ([201, "x", {"Content-Type": "text/plain", "X-Multi": ["a", "b"]}], 201, {"content-type": "text/plain"}, b"x"),
    ([401, {"message": "no"}, {"content-type": "application/problem+json"}], 401,
     {"content-type": "application/problem+json"}, b'{"message":"no"}'),
    ([204], 204, {"content-length": "0"}, b""),
    ([200, "a/b"], 200, {}, b"a/b"),
    ([200, {"path": "/a/b"}], 200, {}, b'{"path":"\\/a\\/b"}'),  # cjson escapes slashes
]


@pytest.mark.parametrize(("args", "status", "headers", "body"), EXIT_CASES)
def test_exit_bodies(args: list[Any], status: int, headers: dict[str, str], body: bytes) -> None:
    res = call("access", "kong.response.exit", *args)
    assert res.client_response is not None
    assert res.client_response.status == status
    for name, value in headers.items():
        assert res.client_response.headers[name] == value
    assert res.client_response.body == body
    assert res.service_request is None  # not proxied
    assert res.source == "exit"


def test_exit_repeated_header_values_keep_their_order() -> None:
    res = call("access", "kong.response.exit", 200, "", {"X-Multi": ["a", "b"]})
    assert res.client_response is not None
    assert res.client_response.headers.get_all("x-multi") == ["a", "b"]


def test_exit_with_none_body_keeps_its_headers() -> None:
    # Our PDK sends "" for a None body followed by headers, so Kong's nil cut
    # cannot drop them (protocol.md §11.2).
    res = call("access", "kong.response.exit", 401, None, {"WWW-Authenticate": "Basic"})
    assert res.client_response is not None
    assert res.client_response.headers["www-authenticate"] == "Basic"
    assert res.client_response.body == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([99], "code must be a number between 100 and 599"),
        ([600, "x"], "code must be a number between 100 and 599"),
        (["200"], "code must be a number"),
        ([200, True], "body must be a nil, string or table"),
        ([200, "x", "h"], "headers must be a nil or table"),
        ([200, "x", {"x": {"nested": 1}}], "invalid header value"),
    ],
)
def test_exit_arguments_are_checked(args: list[Any], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        call("access", "kong.response.exit", *args)
    res = call("access", "kong.response.exit", *args, strict=False)
    assert res.client_response is not None and res.client_response.status == 500


ERROR_CASES: list[tuple[list[Any], dict[str, str], str, str]] = [
    ([403], {}, "application/json; charset=utf-8", '{\n  "message":"Forbidden",\n  "request_id":"RID"\n}'),
    ([404, "Nope"], {}, "application/json; charset=utf-8", '{\n  "message":"Nope",\n  "request_id":"RID"\n}'),
    ([418], {"accept": "text/plain"}, "text/plain; charset=utf-8", "I'm a teapot\nrequest_id: RID\n"),
    ([499], {"accept": "text/*"}, "text/plain; charset=utf-8", "The upstream server responded with 499\nrequest_id: RID\n"),
    ([500], {"accept": "application/xml;q=0.5, text/html"}, "text/html; charset=utf-8",
     '<!doctype html>\n<html>\n  <head>\n    <meta charset="utf-8">\n    <title>Error</title>\n  </head>\n'
     "  <body>\n    <h1>Error</h1>\n    <p>An unexpected error occurred.</p>\n    <p>request_id: RID</p>\n"
     "  </body>\n</html>\n"),
    ([503], {"accept": "application/xml"}, "application/xml; charset=utf-8",
     '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>The upstream server is currently unavailable'
     "</message>\n  <requestid>RID</requestid>\n</error>\n"),
    ([429, {"why": "slow down"}], {}, "application/json; charset=utf-8",
     '{\n  "message":"{"why":"slow down"}",\n  "request_id":"RID"\n}'),
]


@pytest.mark.parametrize(("args", "headers", "content_type", "body"), ERROR_CASES)
def test_error_bodies(args: list[Any], headers: dict[str, str], content_type: str, body: str) -> None:
    res = call("access", "kong.response.error", *args, headers=headers)
    assert res.client_response is not None
    assert res.client_response.status == args[0]
    assert res.client_response.headers["content-type"] == content_type
    assert res.client_response.text == body.replace("RID", res.exchange.request_id)


def test_error_refuses_a_non_error_status() -> None:
    with pytest.raises(AssertionError, match="between 400 and 599"):
        call("access", "kong.response.error", 302)


def test_exit_replaces_the_response_in_the_response_phase() -> None:
    res = call("response", "kong.response.exit", 202, "replaced", {"x-new": "1"})
    assert res.client_response is not None
    assert (res.client_response.status, res.client_response.text) == (202, "replaced")
    assert res.client_response.headers["x-new"] == "1"
    assert res.service_request is not None  # proxied before the response phase


def test_response_getters_see_the_upstream_response_and_kongs_changes() -> None:
    r = runner(
        {
            "access": [["kong.response.set_header", ["x-early", "1"]]],
            "response": [
                ["kong.response.get_status", []],
                ["kong.response.get_headers", []],
                ["kong.response.get_header", ["X_Up"]],
                ["kong.response.get_source", []],
                ["kong.response.set_status", [299]],
                ["kong.response.add_header", ["x-up", "3"]],
                ["kong.response.clear_header", ["x-gone"]],
                ["kong.response.set_headers", {"x-set": ["a", "b"]} and [{"x-set": ["a", "b"]}]],
            ],
            "log": [["kong.response.get_status", []], ["kong.response.get_source", []]],
        }
    )
    upstream = Response(201, [("X-Up", "1"), ("X-Up", "2"), ("X-Gone", "g"), ("Content-Type", "text/plain")], "up")
    res = r.http(upstream=upstream)
    response_calls = [c for c in res.calls if c.phase == "response"]
    assert response_calls[0].result == 201
    assert response_calls[1].result == {
        "x-early": ["1"],
        "x-up": ["1", "2"],
        "x-gone": ["g"],
        "content-type": ["text/plain"],
    }
    assert response_calls[2].result == "1"
    assert response_calls[3].result == "service"
    log_calls = [c for c in res.calls if c.phase == "log"]
    assert [c.result for c in log_calls] == [299, "service"]
    cr = res.client_response
    assert cr is not None
    assert cr.status == 299 and cr.text == "up"
    assert cr.headers.get_all("x-up") == ["1", "2", "3"]
    assert "x-gone" not in cr.headers
    assert cr.headers.get_all("x-set") == ["a", "b"]
    assert cr.headers["via"].startswith("1.1 kong/")


def test_set_status_range_and_transfer_encoding() -> None:
    with pytest.raises(AssertionError, match="between 100 and 599"):
        call("access", "kong.response.set_status", 700)
    res = call("access", "kong.response.set_header", "Transfer-Encoding", "chunked")
    assert "transfer-encoding" not in (res.client_response.headers if res.client_response else {})
    assert res.log_messages("warn") == ["manually setting Transfer-Encoding. Ignored."]


def test_header_values_are_written_with_tostring() -> None:
    res = runner(
        {"access": [["kong.response.set_header", ["x-n", 2]], ["kong.response.set_header", ["x-b", True]]]}
    ).http()
    assert res.client_response is not None
    assert (res.client_response.headers["x-n"], res.client_response.headers["x-b"]) == ("2", "true")
    assert returned(res, "kong.response.set_header") is None
