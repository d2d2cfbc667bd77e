"""The Kong around the plugin: route, service, consumers, trusted IPs, vault, node.

A ``World`` holds what the fake PDK answers about things that are not the
request itself. Entities are dicts shaped like Kong's DB rows, with
``NULL`` (cjson.null) for unset fields, which Kong sends as explicit nils
(docs/protocol.md §6.3).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kong_pdk.testing.kong.lua import NULL
from kong_pdk.testing.kong.versions import LATEST, KongVersion, parse_kong_version

__all__ = ["World", "default_route", "default_service", "consumer", "kit_uuid"]

_CREATED = 1700000000


def kit_uuid(label: str) -> str:
    """A stable uuid for a label, so entity ids are the same in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kong_pdk.testing/{label}"))


def default_service(host: str = "upstream.test", port: int = 80, protocol: str = "http") -> dict[str, Any]:
    return {
        "id": kit_uuid("service/default"),
        "name": "test-service",
        "protocol": protocol,
        "host": host,
        "port": port,
        "path": NULL,
        "retries": 5,
        "connect_timeout": 60000,
        "write_timeout": 60000,
        "read_timeout": 60000,
        "tags": NULL,
        "client_certificate": NULL,
        "tls_verify": NULL,
        "tls_verify_depth": NULL,
        "ca_certificates": NULL,
        "enabled": True,
        "created_at": _CREATED,
        "updated_at": _CREATED,
    }


def default_route(service_id: str | None = None, paths: Sequence[str] = ("/",)) -> dict[str, Any]:
    return {
        "id": kit_uuid("route/default"),
        "name": "test-route",
        "protocols": ["http", "https"],
        "methods": NULL,
        "hosts": NULL,
        "paths": list(paths),
        "headers": NULL,
        "https_redirect_status_code": 426,
        "regex_priority": 0,
        "strip_path": True,
        "path_handling": "v0",
        "preserve_host": False,
        "request_buffering": True,
        "response_buffering": True,
        "tags": NULL,
        "service": {"id": service_id or kit_uuid("service/default")},
        "created_at": _CREATED,
        "updated_at": _CREATED,
    }


def consumer(username: str, *, custom_id: str | None = None, id: str | None = None) -> dict[str, Any]:
    """A consumer entity as Kong returns it."""
    return {
        "id": id or kit_uuid(f"consumer/{username}"),
        "username": username,
        "custom_id": NULL if custom_id is None else custom_id,
        "tags": NULL,
        "created_at": _CREATED,
        "updated_at": _CREATED,
    }


@dataclass
class World:
    """Kong's side of a test: what the fake PDK knows beyond the request.

    * ``route``/``service``: the matched entities (None: no route matched);
    * ``consumer``/``credential``: already authenticated by an earlier plugin;
    * ``consumers``: rows ``kong.client.load_consumer`` can find;
    * ``trusted_ips``: Kong's ``trusted_ips`` (addresses or CIDRs) and
      ``real_ip_header`` for forwarded addresses;
    * ``vault``: reference (``{vault://env/x}``) -> secret;
    * ``upstreams``: names ``kong.service.set_upstream`` accepts (None: any);
    * ``uri_captures``: the router's (unnamed, named) regex captures;
    * ``nginx_vars``: extra ``ngx.var`` values;
    * ``strict``: an unknown or phase-forbidden PDK call fails the test (False:
      Kong's own behaviour, a log line and nil, or a Lua error);
    * ``enterprise``: Kong Enterprise functions exist;
    * ``kong_headers``: Kong adds Via/X-Kong-* headers to responses.
    """

    route: Mapping[str, Any] | None = field(default_factory=default_route)
    service: Mapping[str, Any] | None = field(default_factory=default_service)
    consumer: Mapping[str, Any] | None = None
    credential: Mapping[str, Any] | None = None
    consumers: Sequence[Mapping[str, Any]] = ()
    trusted_ips: Sequence[str] = ()
    real_ip_header: str = "x-real-ip"
    vault: Mapping[str, str] = field(default_factory=dict)
    upstreams: Sequence[str] | None = None
    uri_captures: tuple[Sequence[str], Mapping[str, str]] = ((), {})
    nginx_vars: Mapping[str, str] = field(default_factory=dict)
    node_id: str = field(default_factory=lambda: kit_uuid("node"))
    hostname: str = "kong-test-node"
    cluster_id: str | None = None
    kong_version: KongVersion = LATEST
    strict: bool = True
    enterprise: bool = False
    kong_headers: bool = True
    worker_pid: int = 4242

    def __post_init__(self) -> None:
        # Also "3.8" or "3.8.1", as KongEmulator takes it (kong.plugin(..., kong_version="3.8")).
        self.kong_version = parse_kong_version(self.kong_version)
