"""What ``kong.response.exit`` and ``kong.response.error`` do to the response.

The emulator records the terminal call's arguments after Kong's nil cut
(docs/protocol.md §5.2.3, §11.2); here Kong's checks and its ``send`` run on them:

* ``exit(status, body?, headers?)``: status 100..599; body nil, a string or a
  table; a table body is cjson-encoded and gets ``Content-Type:
  application/json; charset=utf-8`` unless a Content-Type was given; the
  headers are set like ``set_headers``; Content-Length is set unless given;
* ``error(status, message?, headers?)``: status 400..599; a table message is
  cjson-encoded; the format comes from the given Content-Type, else the
  request's Accept header (``error_pages``); the body is Kong's template;
* stream (``preread``): only 200, 400, 403, 500, 502 and 503; a body is sent
  to the client only below 400, otherwise Kong logs it.

A failing check is a Lua ``error()`` (raised as ``LuaError``).
"""

from __future__ import annotations

from kong_pdk.testing.fake.error_pages import error_body, error_message, response_type
from kong_pdk.testing.fake.exchange import Exchange, LogEntry
from kong_pdk.testing.fake.header_checks import header_table
from kong_pdk.testing.fake.lua_args import lua_tostring
from kong_pdk.testing.http.bodies import lua_table_for_cjson
from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import is_lua_number

__all__ = ["apply_exit", "apply_error", "apply_stream_exit"]

_STREAM_CODES = (200, 400, 403, 500, 502, 503)


def _status(value: object, low: int) -> int:
    if not is_lua_number(value):
        raise LuaError("code must be a number")
    assert isinstance(value, (int, float))
    if value < low or value > 599:
        raise LuaError(f"code must be a number between {low} and 599")
    return int(value)


def _encode(value: object, what: str) -> str:
    try:
        return cjson_encode(lua_table_for_cjson(value))
    except (TypeError, ValueError) as exc:
        raise LuaError(f"{what}: {exc}") from None


def _as_bytes(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    assert isinstance(body, str)
    return body.encode("utf-8", "surrogateescape")


def _send(ex: Exchange, status: int, body: bytes | None, headers: list[tuple[str, list[str]]], json: bool) -> None:
    ex.status = status
    has_type = has_length = False
    for name, values in headers:
        lower = name.lower().replace("_", "-")
        if lower == "transfer-encoding":
            ex.logs.append(LogEntry("warn", "manually setting Transfer-Encoding. Ignored.", ex.phase))
            continue
        ex.response_headers.set(name.replace("_", "-"), values)
        has_type = has_type or lower == "content-type"
        has_length = has_length or lower == "content-length"
    if json and not has_type:
        ex.response_headers.set("Content-Type", "application/json; charset=utf-8")
    if not has_length:
        ex.response_headers.set("Content-Length", str(len(body or b"")))
    ex.response_body = body or b""
    ex.exited = True


def apply_exit(ex: Exchange, args: tuple[object, ...]) -> None:
    status = _status(args[0] if args else None, 100)
    body = args[1] if len(args) > 1 else None
    headers = args[2] if len(args) > 2 else None
    if body is not None and not isinstance(body, (str, bytes, dict, list)):
        raise LuaError("body must be a nil, string or table")
    if headers is not None and not isinstance(headers, (dict, list)):
        raise LuaError("headers must be a nil or table")
    pairs = header_table(headers) if headers is not None else []
    if isinstance(body, (dict, list)):
        text = _encode(body, "body encoding failed while flushing response")
        _send(ex, status, text.encode("utf-8", "surrogateescape"), pairs, json=True)
    else:
        _send(ex, status, None if body is None else _as_bytes(body), pairs, json=False)


def apply_error(ex: Exchange, args: tuple[object, ...]) -> None:
    status = _status(args[0] if args else None, 400)
    message = args[1] if len(args) > 1 else None
    headers = args[2] if len(args) > 2 else None
    if isinstance(message, (dict, list)):
        message = _encode(message, "could not JSON encode the error message")
    if message is not None and not isinstance(message, (str, bytes)):
        raise LuaError("message must be a nil, a string or a table")
    if headers is not None and not isinstance(headers, (dict, list)):
        raise LuaError("headers must be a nil or table")
    pairs = header_table(headers) if headers is not None else []
    given = next((v for n, v in pairs if n == "Content-Type"), None)
    if given is not None:
        content_type = given[0]
    elif (ex.headers.get("content-type") or "").startswith("application/grpc") and ex.request.http_version == 2:
        content_type = "application/grpc"
    else:
        content_type = response_type(ex.headers.get_all("accept") or None)
    pairs = [(n, v) for n, v in pairs if n != "Content-Type"] + [("Content-Type", [content_type])]
    body: bytes | None = None
    if content_type != "application/grpc":
        text = lua_tostring(message) if message is not None else error_message(status)
        rendered = error_body(content_type, text, ex.request_id)
        if rendered is None:
            raise LuaError(f"bad argument #1 to 'format' (no template found for MIME type {content_type})")
        body = rendered.encode("utf-8", "surrogateescape")
    _send(ex, status, body, pairs, json=False)


def apply_stream_exit(ex: Exchange, args: tuple[object, ...]) -> None:
    status = args[0] if args else None
    if not is_lua_number(status):
        raise LuaError("code must be a number")
    if status not in _STREAM_CODES:
        raise LuaError("unacceptable code, only 200, 400, 403, 500, 502 and 503 are accepted")
    assert isinstance(status, (int, float))
    body = args[1] if len(args) > 1 else None
    if isinstance(body, (dict, list)):
        body = _encode(body, "invalid body")
    if body is not None and not isinstance(body, (str, bytes)):
        raise LuaError("body must be a nil, string or table")
    ex.status = int(status)
    ex.exited = True
    if body is not None:
        if status < 400:
            ex.stream_sent += _as_bytes(body)
        else:
            text = _as_bytes(body).decode("utf-8", "surrogateescape")
            ex.logs.append(
                LogEntry("err", f"unable to proxy stream connection, status: {int(status)}, err: {text}", ex.phase)
            )
