"""The upstream service the kit proxies to, and how Kong builds the request to it.

The request Kong sends (``build_service_request``):

* method, query, body and headers are the live request's (plugins may have
  changed them); hop-by-hop headers are not forwarded;
* scheme, target and path are the upstream variables (service, router strip,
  plugin setters);
* Kong sets Host to the upstream host (``preserve_host`` off) unless a plugin
  set it, and the X-Forwarded-For/Proto/Host/Port/Path, X-Real-IP (and
  X-Forwarded-Prefix when the router stripped one) headers, overriding any the
  plugin set, because nginx's ``proxy_set_header`` has the last word.

The default upstream ``echo`` answers 200 with a JSON description of what it got.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from kong_pdk.testing.fake.client import forwarded_ip
from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.iptrust import is_trusted
from kong_pdk.testing.fake.request import (
    get_forwarded_host,
    get_forwarded_path,
    get_forwarded_port,
    get_forwarded_scheme,
)
from kong_pdk.testing.http.messages import Response, ServiceRequest

__all__ = ["Upstream", "echo", "build_service_request"]

Upstream = Response | Callable[[ServiceRequest], Response]

_HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")


def echo(request: ServiceRequest) -> Response:
    """A JSON echo of the upstream request: method, url, path, query, headers, body."""
    body = {
        "method": request.method,
        "url": request.url,
        "path": request.path,
        "query": request.raw_query,
        "headers": request.headers.to_dict(),
        "body": request.body.decode("utf-8", "replace"),
    }
    return Response(200, {"Content-Type": "application/json"}, json.dumps(body, sort_keys=True))


def build_service_request(ex: Exchange) -> ServiceRequest:
    headers = ex.headers.copy()
    for name in _HOP_BY_HOP:
        headers.remove(name)
    # Values computed before overriding anything (they read the client's headers).
    xff_prior = ex.headers.get("x-forwarded-for")
    client = forwarded_ip(ex)
    proto, fhost, fport, fpath = (
        get_forwarded_scheme(ex),
        get_forwarded_host(ex),
        get_forwarded_port(ex),
        get_forwarded_path(ex),
    )
    default_port = 443 if ex.upstream_scheme == "https" else 80
    host = ex.upstream_host_header or (
        ex.target_host if ex.target_port == default_port else f"{ex.target_host}:{ex.target_port}"
    )
    headers.set("Host", host)
    # Kong keeps a trusted client's X-Forwarded-For chain and appends to it.
    trusted = is_trusted(ex.request.client_ip, ex.world.trusted_ips)
    headers.set("X-Forwarded-For", f"{xff_prior}, {ex.request.client_ip}" if trusted and xff_prior else client)
    headers.set("X-Forwarded-Proto", proto)
    headers.set("X-Forwarded-Host", fhost)
    headers.set("X-Forwarded-Port", str(fport))
    headers.set("X-Forwarded-Path", fpath)
    if ex.forwarded_prefix is not None:
        headers.set("X-Forwarded-Prefix", ex.forwarded_prefix)
    headers.set("X-Real-IP", client)
    if ex.world.kong_version >= (3, 5):
        headers.set("X-Kong-Request-Id", ex.request_id)
    return ServiceRequest(
        method=ex.method,
        scheme=ex.upstream_scheme,
        host=ex.target_host,
        port=ex.target_port,
        path=ex.upstream_uri,
        raw_query=ex.raw_query,
        headers=headers,
        body=ex.body,
        retries=ex.retries,
        timeouts=ex.timeouts,
        tls_verify=ex.tls_verify,
        tls_verify_depth=ex.tls_verify_depth,
        upstream=ex.upstream_name,
    )
