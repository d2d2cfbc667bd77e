"""``ngx.var`` for ``kong.nginx.get_var``: nginx's variables computed from the request.

Covers the common ones (``request_uri``, ``uri``, ``args``, ``scheme``, ``host``,
``server_port``, ``remote_addr``, ``remote_port``, ``request_method``,
``http_<header>``, ``upstream_uri``, ``upstream_host``, ``request_id``, …); a
test adds or overrides any through ``World.nginx_vars``. An unknown variable is
nil, as in nginx.
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.http.uri import normalize_path

__all__ = ["nginx_var"]


def nginx_var(ex: Exchange, name: str) -> str | None:
    if name in ex.world.nginx_vars:
        return ex.world.nginx_vars[name]
    req = ex.request
    if name.startswith("http_"):
        return ex.headers.get(name[5:].replace("_", "-"))
    if name.startswith("arg_"):
        from kong_pdk.testing.http.args import decode_args

        value = decode_args(ex.raw_query).get(name[4:])
        if isinstance(value, list):
            value = value[0]
        return value if isinstance(value, str) else ("" if value is True else None)
    host_header = ex.headers.get("host") or req.host
    table: dict[str, str | None] = {
        "request_uri": req.request_uri,
        "uri": normalize_path(req.raw_path),
        "args": ex.raw_query or None,
        "query_string": ex.raw_query or None,
        "is_args": "?" if ex.raw_query else "",
        "scheme": req.scheme,
        "https": "on" if ex.is_https else "",
        "host": host_header.split(":", 1)[0].lower(),
        "server_port": str(req.port),
        "server_addr": "127.0.0.1",
        "remote_addr": req.client_ip,
        "realip_remote_addr": req.client_ip,
        "remote_port": str(req.client_port),
        "request_method": ex.method,
        "request_length": str(len(req.body)),
        "content_type": ex.headers.get("content-type"),
        "content_length": ex.headers.get("content-length"),
        "server_protocol": "HTTP/2.0" if req.http_version == 2 else f"HTTP/{req.http_version}",
        "request": f"{ex.method} {req.request_uri} HTTP/{req.http_version}",
        "upstream_uri": ex.upstream_uri + ("?" + ex.raw_query if ex.raw_query else ""),
        "upstream_scheme": ex.upstream_scheme,
        "upstream_host": ex.upstream_host_header or ex.target_host,
        "request_id": ex.request_id,
        "kong_request_id": ex.request_id,
        "ssl_protocol": "TLSv1.3" if ex.is_https else None,
        "ssl_server_name": req.host if ex.is_https else None,
        "hostname": ex.world.hostname,
        "pid": str(ex.world.worker_pid),
        "status": str(ex.status) if ex.status is not None else None,
    }
    return table.get(name)
