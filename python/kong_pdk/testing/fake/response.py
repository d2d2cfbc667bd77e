"""Fake ``kong.response.*`` getters and setters (exit/error live in ``terminal``).

* getters (``response``/``log``) read the response the client will get:
  status, headers as ``ngx.resp.get_headers`` returns them (lower-case names),
  and where it came from (``get_source``: "exit" after kong.response.exit or
  error, "service" when proxied, "error" otherwise);
* setters check the status range (100..599) and header arguments, and refuse a
  ``Transfer-Encoding`` header (Kong logs a warning and ignores it).
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange, LogEntry
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.header_checks import header_name, header_table, header_values, plain_header_name
from kong_pdk.testing.fake.lua_args import need_bytes, opt_arg
from kong_pdk.testing.fake.request import limit
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import is_lua_number

FUNCTIONS = FunctionTable()


def _transfer_encoding(ex: Exchange, name: str) -> bool:
    if name.lower() in ("transfer-encoding", "transfer_encoding"):
        ex.logs.append(LogEntry("warn", "manually setting Transfer-Encoding. Ignored.", ex.phase))
        return True
    return False


def response_name(name: str) -> str:
    # lua_transform_underscores_in_response_headers is on by default.
    return name.replace("_", "-")


@FUNCTIONS.define("kong.response.get_status")
def get_status(ex: Exchange) -> int:
    return ex.status if ex.status is not None else 200


@FUNCTIONS.define("kong.response.get_header")
def get_header(ex: Exchange, *args: object) -> str | None:
    return ex.response_headers.get(plain_header_name(opt_arg(args, 0)))


@FUNCTIONS.define("kong.response.get_headers")
def get_headers(ex: Exchange, *args: object) -> object:
    return ex.response_headers.to_lua(limit(opt_arg(args, 0), "max_headers"))


@FUNCTIONS.define("kong.response.get_source")
def get_source(ex: Exchange) -> str:
    if ex.unexpected:
        return "error"
    if ex.exited:
        return "exit"
    if ex.proxied:
        return "service"
    return "error"


@FUNCTIONS.define("kong.response.set_status")
def set_status(ex: Exchange, *args: object) -> None:
    status = opt_arg(args, 0)
    if not is_lua_number(status):
        raise LuaError("code must be a number")
    assert isinstance(status, (int, float))
    if status < 100 or status > 599:
        raise LuaError("code must be a number between 100 and 599")
    ex.status = int(status)


@FUNCTIONS.define("kong.response.set_header")
def set_header(ex: Exchange, *args: object) -> None:
    name = header_name(opt_arg(args, 0))
    values = header_values(name, opt_arg(args, 1))
    if not _transfer_encoding(ex, name):
        ex.response_headers.set(response_name(name), values)


@FUNCTIONS.define("kong.response.add_header")
def add_header(ex: Exchange, *args: object) -> None:
    name = header_name(opt_arg(args, 0))
    values = header_values(name, opt_arg(args, 1))
    ex.response_headers.add(response_name(name), values)


@FUNCTIONS.define("kong.response.clear_header")
def clear_header(ex: Exchange, *args: object) -> None:
    ex.response_headers.remove(response_name(plain_header_name(opt_arg(args, 0))))


@FUNCTIONS.define("kong.response.set_headers")
def set_headers(ex: Exchange, *args: object) -> None:
    headers = opt_arg(args, 0)
    if not isinstance(headers, (dict, list)):
        raise LuaError("headers must be a table")
    for name, values in header_table(headers):
        if not _transfer_encoding(ex, name):
            ex.response_headers.set(response_name(name), values)


@FUNCTIONS.define("kong.response.get_raw_body")
def get_raw_body(ex: Exchange) -> object:
    return ex.response_body


@FUNCTIONS.define("kong.response.set_raw_body")
def set_raw_body(ex: Exchange, *args: object) -> None:
    ex.response_body = need_bytes(opt_arg(args, 0), "body")
