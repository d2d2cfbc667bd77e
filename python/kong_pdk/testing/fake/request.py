"""Fake ``kong.request.*``: the client's request as Kong reports it.

Facts per function (Kong 3.x, see the module docs of kong.request):

* scheme/host/port come from the connection (``$scheme``, ``$host`` lower-cased
  without port, ``$server_port``); ``get_forwarded_*`` use X-Forwarded-* only
  when the client address is trusted (``kong.ip.is_trusted``);
* ``get_path`` is ``get_raw_path`` normalised (``uri.normalize_path``);
  ``get_path_with_query`` is the raw request line URI;
* ``get_query``/``get_headers`` take an optional limit in 1..1000 (100 by default);
* ``get_header`` returns the first value; names are case-insensitive and ``_``
  stands for ``-``;
* ``get_raw_body`` is ``""`` for no body; ``get_body`` decodes by content type;
* ``get_start_time`` is in milliseconds.
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.header_checks import plain_header_name
from kong_pdk.testing.fake.iptrust import is_trusted
from kong_pdk.testing.fake.lua_args import need_number, need_str, opt_arg
from kong_pdk.testing.http.args import decode_args
from kong_pdk.testing.http.bodies import decode_body
from kong_pdk.testing.http.uri import normalize_path
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import LuaMulti

FUNCTIONS = FunctionTable()


def limit(value: object, what: str, default: int = 100) -> int:
    """Kong's check of a max_headers/max_args argument (1..1000)."""
    if value is None:
        return default
    n = need_number(value, what)
    if n < 1:
        raise LuaError(f"{what} must be >= 1")
    if n > 1000:
        raise LuaError(f"{what} must be <= 1000")
    return int(n)


def _trusted(ex: Exchange) -> bool:
    return is_trusted(ex.request.client_ip, ex.world.trusted_ips)


def _trusted_header(ex: Exchange, name: str) -> str | None:
    """An X-Forwarded-* header, or None when absent or the client is not trusted."""
    return ex.headers.get(name) if _trusted(ex) else None


def host_of(ex: Exchange) -> str:
    host = ex.headers.get("host")
    if not host:
        return ex.request.host
    host = host.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host.split("]", 1)[0].lower() + "]"
    return host.split(":", 1)[0].lower()


@FUNCTIONS.define("kong.request.get_scheme")
def get_scheme(ex: Exchange) -> str:
    return ex.request.scheme


@FUNCTIONS.define("kong.request.get_host")
def get_host(ex: Exchange) -> str:
    return host_of(ex)


@FUNCTIONS.define("kong.request.get_port")
def get_port(ex: Exchange) -> int:
    return ex.request.port


@FUNCTIONS.define("kong.request.get_forwarded_scheme")
def get_forwarded_scheme(ex: Exchange) -> str:
    proto = _trusted_header(ex, "x-forwarded-proto")
    return proto.lower() if proto is not None else ex.request.scheme


def _forwarded_host_part(ex: Exchange) -> str | None:
    host = ex.headers.get("x-forwarded-host")
    if host is None:
        return None
    return host.split("@", 1)[1] if "@" in host else host


@FUNCTIONS.define("kong.request.get_forwarded_host")
def get_forwarded_host(ex: Exchange) -> str:
    if _trusted(ex):
        host = _forwarded_host_part(ex)
        if host is not None:
            return host.split(":", 1)[0].lower()
    return host_of(ex)


def _port(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    port = int(text.strip())
    return port if 1 <= port <= 65535 else None


@FUNCTIONS.define("kong.request.get_forwarded_port")
def get_forwarded_port(ex: Exchange) -> int:
    if _trusted(ex):
        port = _port(ex.headers.get("x-forwarded-port"))
        if port is not None:
            return port
        host = _forwarded_host_part(ex)
        if host is not None and ":" in host:
            port = _port(host.split(":", 1)[1])
            if port is not None:
                return port
    return ex.request.port


@FUNCTIONS.define("kong.request.get_forwarded_path")
def get_forwarded_path(ex: Exchange) -> str:
    path = _trusted_header(ex, "x-forwarded-path")
    return path if path is not None else normalize_path(ex.request.raw_path)


@FUNCTIONS.define("kong.request.get_forwarded_prefix")
def get_forwarded_prefix(ex: Exchange) -> str | None:
    prefix = _trusted_header(ex, "x-forwarded-prefix")
    return prefix if prefix is not None else ex.forwarded_prefix


@FUNCTIONS.define("kong.request.get_http_version")
def get_http_version(ex: Exchange) -> float:
    return ex.request.http_version


@FUNCTIONS.define("kong.request.get_method")
def get_method(ex: Exchange) -> str:
    return ex.method


@FUNCTIONS.define("kong.request.get_path")
def get_path(ex: Exchange) -> str:
    return normalize_path(ex.request.raw_path)


@FUNCTIONS.define("kong.request.get_raw_path")
def get_raw_path(ex: Exchange) -> str:
    return ex.request.raw_path


@FUNCTIONS.define("kong.request.get_path_with_query")
def get_path_with_query(ex: Exchange) -> str:
    return ex.request.request_uri


@FUNCTIONS.define("kong.request.get_raw_query")
def get_raw_query(ex: Exchange) -> str:
    return ex.raw_query


@FUNCTIONS.define("kong.request.get_query_arg")
def get_query_arg(ex: Exchange, *args: object) -> object:
    name = opt_arg(args, 0)
    if not isinstance(name, str):
        raise LuaError("query argument name must be a string")
    value = decode_args(ex.raw_query, 100).get(name)
    if isinstance(value, list):
        return value[0]
    return value


@FUNCTIONS.define("kong.request.get_query")
def get_query(ex: Exchange, *args: object) -> object:
    return decode_args(ex.raw_query, limit(opt_arg(args, 0), "max_args"))


@FUNCTIONS.define("kong.request.get_header")
def get_header(ex: Exchange, *args: object) -> str | None:
    return ex.headers.get(plain_header_name(opt_arg(args, 0)))


@FUNCTIONS.define("kong.request.get_headers")
def get_headers(ex: Exchange, *args: object) -> object:
    return ex.headers.to_lua(limit(opt_arg(args, 0), "max_headers"))


@FUNCTIONS.define("kong.request.get_raw_body")
def get_raw_body(ex: Exchange, *args: object) -> object:
    # The whole body is in memory in the kit; Kong returns nil for a body it
    # buffered to a file unless max_allowed_file_size allows reading it.
    return ex.body


@FUNCTIONS.define("kong.request.get_body")
def get_body(ex: Exchange, *args: object) -> object:
    mimetype = opt_arg(args, 0)
    if mimetype is not None:
        mimetype = need_str(mimetype, "mimetype")
    decoded_limit = 100
    content_type = mimetype or ex.headers.get("content-type")
    if content_type and content_type.lower().startswith("application/x-www-form-urlencoded"):
        decoded_limit = limit(opt_arg(args, 1), "max_args")
    decoded = decode_body(ex.body, ex.headers.get("content-type"), mimetype, decoded_limit)
    return LuaMulti(decoded.value, decoded.err, decoded.mimetype)


@FUNCTIONS.define("kong.request.get_start_time")
def get_start_time(ex: Exchange) -> float:
    return ex.start_time * 1000


@FUNCTIONS.define("kong.request.get_uri_captures")
def get_uri_captures(ex: Exchange) -> object:
    unnamed, named = ex.world.uri_captures
    return {"unnamed": list(unnamed), "named": dict(named)}
