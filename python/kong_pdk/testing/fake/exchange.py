"""The state of one request as nginx and Kong hold it, shared by all its phases.

One ``Exchange`` lives from the TLS handshake to the log phase. The fake PDK
reads and changes it; the kit builds the upstream request and the client's
response from it. Like nginx, there is one request: ``kong.service.request``
changes of headers, method, query and body also show in ``kong.request``
getters (they go through ``ngx.req.*``), while the path sent upstream
(``upstream_uri``) is separate from the client's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kong_pdk.testing.fake.world import World
from kong_pdk.testing.http.headers import Headers
from kong_pdk.testing.http.messages import Request, Response

__all__ = ["Exchange", "LogEntry", "TlsState"]


@dataclass(frozen=True)
class LogEntry:
    """One ``kong.log.<level>(...)`` call: the level, the phase and the text Kong writes."""

    level: str
    message: str
    phase: str
    args: tuple[object, ...] = ()

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"


@dataclass
class TlsState:
    """What the certificate phase asked of the TLS handshake."""

    client_certificate_requested: bool = False
    ca_certs: object = None
    session_reuse_disabled: bool = False
    client_verify: str | None = None


@dataclass
class Exchange:
    request: Request
    world: World
    subsystem: str = "http"
    phase: str = ""
    # The live request (ngx.req): mutated by kong.service.request setters.
    method: str = ""
    headers: Headers = field(default_factory=Headers)
    raw_query: str = ""
    body: bytes = b""
    # What goes upstream beyond the live request (ngx.var.upstream_*).
    upstream_scheme: str = "http"
    upstream_host_header: str | None = None
    upstream_uri: str = "/"
    target_host: str = ""
    target_port: int = 80
    upstream_name: str | None = None
    retries: int = 5
    timeouts: tuple[int, int, int] = (60000, 60000, 60000)
    tls_verify: bool | None = None
    tls_verify_depth: int | None = None
    buffering: bool = False
    forwarded_prefix: str | None = None
    # The response the client will get.
    status: int | None = None
    response_headers: Headers = field(default_factory=Headers)
    response_body: bytes | None = None
    upstream_response: Response | None = None
    exited: bool = False
    proxied: bool = False
    unexpected: bool = False
    # Per-request tables.
    ctx_shared: dict[str, Any] = field(default_factory=dict)
    ngx_ctx: dict[str, Any] = field(default_factory=dict)
    consumer: Any = None
    credential: Any = None
    consumer_groups: Any = None
    serialize_extras: dict[str, Any] = field(default_factory=dict)
    logs: list[LogEntry] = field(default_factory=list)
    telemetry: list[tuple[object, ...]] = field(default_factory=list)
    tls: TlsState = field(default_factory=TlsState)
    inspect_on: bool = True
    log_format: str | None = None
    stream_sent: bytes = b""
    start_time: float = field(default_factory=time.time)
    request_id: str = ""
    plugin_id: str = ""

    @classmethod
    def begin(cls, request: Request, world: World, *, subsystem: str = "http", plugin_id: str = "") -> Exchange:
        ex = cls(request=request, world=world, subsystem=subsystem, plugin_id=plugin_id)
        ex.method = request.method
        ex.headers = request.headers.copy()
        ex.raw_query = request.raw_query
        ex.body = request.body
        ex.consumer = world.consumer
        ex.credential = world.credential
        ex.request_id = uuid.uuid4().hex  # Kong's request ids are 32 hex digits
        ex._route_request()
        return ex

    def _route_request(self) -> None:
        """What Kong's router decides before plugins run: upstream target and path."""
        service = self.world.service or {}
        self.upstream_scheme = str(service.get("protocol") or "http")
        self.target_host = str(service.get("host") or "upstream.test")
        port = service.get("port")
        self.target_port = int(port) if isinstance(port, int) else (443 if self.upstream_scheme == "https" else 80)
        retries = service.get("retries")
        self.retries = retries if isinstance(retries, int) else 5
        path = self.request.raw_path
        route = self.world.route or {}
        prefix = ""
        if route.get("strip_path") is True:
            paths = route.get("paths")
            for p in paths if isinstance(paths, list) else []:
                if isinstance(p, str) and not p.startswith("~") and path.startswith(p):
                    prefix = p
                    break
        stripped = path[len(prefix) :] if prefix else path
        if prefix and prefix != "/":
            self.forwarded_prefix = prefix
        base = service.get("path")
        base_path = base if isinstance(base, str) else ""
        if base_path:
            joined = base_path.rstrip("/") + "/" + stripped.lstrip("/") if stripped else base_path
        else:
            joined = stripped if stripped.startswith("/") else "/" + stripped
        self.upstream_uri = joined or "/"

    @property
    def is_https(self) -> bool:
        return self.request.scheme == "https"

    @property
    def elapsed_ms(self) -> int:
        return int((time.time() - self.start_time) * 1000)
