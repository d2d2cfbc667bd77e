"""Fake ``kong.service.*``, ``kong.service.request.*`` and ``kong.service.response.*``.

The request setters change the live request (headers, method, query, body go
through ``ngx.req.*``, so ``kong.request`` getters see them too) or the upstream
variables (scheme, path, Host, target). The response getters read the
upstream's response as it arrived, before any plugin change.
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.header_checks import header_name, header_table, header_values, plain_header_name
from kong_pdk.testing.fake.lua_args import need_bytes, need_number, need_str, opt_arg
from kong_pdk.testing.fake.request import limit
from kong_pdk.testing.http.args import encode_args
from kong_pdk.testing.http.bodies import decode_body, encode_body
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import LuaMulti

FUNCTIONS = FunctionTable()

_METHODS = frozenset(
    "GET HEAD PUT POST DELETE OPTIONS MKCOL COPY MOVE PROPFIND PROPPATCH LOCK UNLOCK PATCH TRACE".split()
)


# -- kong.service ----------------------------------------------------------------


@FUNCTIONS.define("kong.service.set_upstream")
def set_upstream(ex: Exchange, *args: object) -> object:
    host = need_str(opt_arg(args, 0), "host")
    known = ex.world.upstreams
    if known is not None and host not in known:
        return LuaMulti(None, f"could not find an Upstream named '{host}'")
    ex.upstream_name = host
    ex.target_host = host
    return True


@FUNCTIONS.define("kong.service.set_target")
def set_target(ex: Exchange, *args: object) -> None:
    host = need_str(opt_arg(args, 0), "host")
    port = need_number(opt_arg(args, 1), "port")
    if port < 0 or port > 65535 or port != int(port):
        raise LuaError("port must be an integer between 0 and 65535: given " + str(port))
    ex.target_host = host
    ex.target_port = int(port)
    ex.upstream_name = None


@FUNCTIONS.define("kong.service.set_retries")
def set_retries(ex: Exchange, *args: object) -> None:
    retries = need_number(opt_arg(args, 0), "retries")
    if retries < 0 or retries > 32767 or retries != int(retries):
        raise LuaError("retries must be an integer between 0 and 32767: given " + str(retries))
    ex.retries = int(retries)


@FUNCTIONS.define("kong.service.set_timeouts")
def set_timeouts(ex: Exchange, *args: object) -> None:
    values: list[int] = []
    for i, what in enumerate(("connect_timeout", "write_timeout", "read_timeout")):
        t = need_number(opt_arg(args, i), what)
        if t < 1 or t > 2147483646 or t != int(t):
            raise LuaError(f"{what} must be an integer between 1 and 2147483646: given {t}")
        values.append(int(t))
    ex.timeouts = (values[0], values[1], values[2])


@FUNCTIONS.define("kong.service.set_tls_verify")
def set_tls_verify(ex: Exchange, *args: object) -> object:
    on = opt_arg(args, 0)
    if not isinstance(on, bool):
        raise LuaError("argument must be a boolean")
    ex.tls_verify = on
    return True


@FUNCTIONS.define("kong.service.set_tls_verify_depth")
def set_tls_verify_depth(ex: Exchange, *args: object) -> object:
    depth = need_number(opt_arg(args, 0), "depth")
    ex.tls_verify_depth = int(depth)
    return True


# -- kong.service.request --------------------------------------------------------


@FUNCTIONS.define("kong.service.request.enable_buffering")
def enable_buffering(ex: Exchange) -> None:
    ex.buffering = True


@FUNCTIONS.define("kong.service.request.set_scheme")
def set_scheme(ex: Exchange, *args: object) -> None:
    scheme = need_str(opt_arg(args, 0), "scheme")
    if scheme not in ("http", "https"):
        raise LuaError("invalid scheme: " + scheme)
    ex.upstream_scheme = scheme


@FUNCTIONS.define("kong.service.request.set_path")
def set_path(ex: Exchange, *args: object) -> None:
    path = need_str(opt_arg(args, 0), "path")
    if not path.startswith("/"):
        raise LuaError("path must start with /")
    from kong_pdk.testing.http.args import escape_uri

    # Kong escapes the path as a URI would need (slashes and escapes stay).
    ex.upstream_uri = "/".join(
        seg if "%" in seg else escape_uri(seg).replace("%40", "@").replace("%3A", ":") for seg in path.split("/")
    )


@FUNCTIONS.define("kong.service.request.set_raw_query")
def set_raw_query(ex: Exchange, *args: object) -> None:
    ex.raw_query = need_str(opt_arg(args, 0), "query")


@FUNCTIONS.define("kong.service.request.set_method")
def set_method(ex: Exchange, *args: object) -> None:
    method = need_str(opt_arg(args, 0), "method")
    if method not in _METHODS:
        raise LuaError("invalid method: " + method)
    ex.method = method


@FUNCTIONS.define("kong.service.request.set_query")
def set_query(ex: Exchange, *args: object) -> None:
    table = opt_arg(args, 0)
    if isinstance(table, list) and not table:
        table = {}
    if not isinstance(table, dict):
        raise LuaError("args must be a table")
    ex.raw_query = encode_args(table)


@FUNCTIONS.define("kong.service.request.clear_query_arg")
def clear_query_arg(ex: Exchange, *args: object) -> None:
    name = opt_arg(args, 0)
    if not isinstance(name, str):
        raise LuaError("query argument name must be a string")
    from kong_pdk.testing.http.args import unescape

    kept = [p for p in ex.raw_query.split("&") if p and unescape(p.partition("=")[0]) != name]
    ex.raw_query = "&".join(kept).replace("+", "%20")


def _set_host(ex: Exchange, name: str, values: list[str]) -> None:
    if name.lower() == "host":
        ex.upstream_host_header = values[0] if values else None


@FUNCTIONS.define("kong.service.request.set_header")
def set_header(ex: Exchange, *args: object) -> object:
    name = header_name(opt_arg(args, 0))
    values = header_values(name, opt_arg(args, 1))
    _set_host(ex, name, values)
    if name.lower() == ":authority":
        if ex.upstream_scheme not in ("grpc", "grpcs"):
            return LuaMulti(None, "cannot set :authority pseudo-header on non-grpc requests")
        return None
    ex.headers.set(name, values)
    return None


@FUNCTIONS.define("kong.service.request.add_header")
def add_header(ex: Exchange, *args: object) -> None:
    name = header_name(opt_arg(args, 0))
    values = header_values(name, opt_arg(args, 1))
    _set_host(ex, name, values)
    ex.headers.add(name, values)


@FUNCTIONS.define("kong.service.request.clear_header")
def clear_header(ex: Exchange, *args: object) -> None:
    name = opt_arg(args, 0)
    if not isinstance(name, str):
        raise LuaError("header must be a string")
    ex.headers.remove(name)


@FUNCTIONS.define("kong.service.request.set_headers")
def set_headers(ex: Exchange, *args: object) -> None:
    headers = opt_arg(args, 0)
    if not isinstance(headers, (dict, list)):
        raise LuaError("headers must be a table")
    for name, values in header_table(headers):
        _set_host(ex, name, values)
        ex.headers.set(name, values)


def _set_body(ex: Exchange, body: bytes) -> None:
    ex.body = body
    ex.headers.remove("transfer-encoding")
    ex.headers.set("Content-Length", str(len(body)))


@FUNCTIONS.define("kong.service.request.set_raw_body")
def set_raw_body(ex: Exchange, *args: object) -> None:
    _set_body(ex, need_bytes(opt_arg(args, 0), "body"))


@FUNCTIONS.define("kong.service.request.set_body")
def set_body(ex: Exchange, *args: object) -> object:
    table = opt_arg(args, 0)
    if isinstance(table, list) and not table:
        table = {}
    if not isinstance(table, (dict, list)):
        raise LuaError("args must be a table")
    mime = opt_arg(args, 1)
    if mime is not None and not isinstance(mime, str):
        raise LuaError("mime must be a string")
    if mime is None:
        mime = ex.headers.get("content-type")
        if mime is None:
            return LuaMulti(None, "content type was neither explicitly given as an argument or received as a header")
    base = mime.split(";", 1)[0]
    if base not in ("application/x-www-form-urlencoded", "application/json", "multipart/form-data"):
        raise LuaError("unsupported content type " + mime)
    mapping = table if isinstance(table, dict) else {i + 1: v for i, v in enumerate(table)}
    body, content_type = encode_body(mapping, mime)
    _set_body(ex, body)
    ex.headers.set("Content-Type", content_type)
    return True


@FUNCTIONS.define("kong.service.request.enable_tls", "kong.service.request.disable_tls")
def toggle_tls(ex: Exchange) -> object:
    return True


# -- kong.service.response --------------------------------------------------------


@FUNCTIONS.define("kong.service.response.get_status")
def get_status(ex: Exchange) -> object:
    return ex.upstream_response.status if ex.upstream_response else None


@FUNCTIONS.define("kong.service.response.get_headers")
def get_headers(ex: Exchange, *args: object) -> object:
    n = limit(opt_arg(args, 0), "max_headers")
    return ex.upstream_response.headers.to_lua(n) if ex.upstream_response else {}


@FUNCTIONS.define("kong.service.response.get_header")
def get_header(ex: Exchange, *args: object) -> object:
    name = plain_header_name(opt_arg(args, 0))
    return ex.upstream_response.headers.get(name) if ex.upstream_response else None


@FUNCTIONS.define("kong.service.response.get_raw_body")
def get_raw_body(ex: Exchange) -> object:
    return ex.upstream_response.body if ex.upstream_response else None


@FUNCTIONS.define("kong.service.response.get_body")
def get_body(ex: Exchange, *args: object) -> object:
    if ex.upstream_response is None:
        return None
    mimetype = opt_arg(args, 0)
    if mimetype is not None:
        mimetype = need_str(mimetype, "mimetype")
    res = ex.upstream_response
    decoded = decode_body(res.body, res.headers.get("content-type"), mimetype, limit(opt_arg(args, 1), "max_args"))
    return LuaMulti(decoded.value, decoded.err, decoded.mimetype)
