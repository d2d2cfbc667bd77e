"""What a test hands the kit and gets back: a client request, and responses.

``Request`` is the client's request as it reaches Kong (method, URL, headers,
body, who is connecting). ``Response`` is an HTTP response: the one the client
gets, or one the test gives as the upstream's answer. ``ServiceRequest`` is what
Kong sent upstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

from kong_pdk.testing.http.args import ArgValue, decode_args, encode_args
from kong_pdk.testing.http.headers import HeaderInput, Headers

__all__ = ["Request", "Response", "ServiceRequest", "Body"]

Body = bytes | str | None

_DEFAULT_PORTS = {"http": 80, "https": 443, "tcp": 0, "tls": 0}


def _body_bytes(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    return bytes(body)


class Request:
    """A client request. ``json=``/``form=`` build the body and its Content-Type.

    ``url`` gives scheme, host, port, path and query exactly as sent; the Host
    header defaults to the URL's authority.
    """

    def __init__(
        self,
        method: str = "GET",
        url: str = "http://localhost/",
        headers: HeaderInput = None,
        body: Body = None,
        *,
        json: object = None,
        form: Mapping[str, object] | None = None,
        client_ip: str = "127.0.0.1",
        client_port: int = 40000,
        http_version: float = 1.1,
        client_certificate: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"URL scheme must be http or https: {url!r}")
        self.method: str = method
        self.scheme: str = parts.scheme
        self.host: str = (parts.hostname or "localhost").lower()
        self.port: int = parts.port or _DEFAULT_PORTS[parts.scheme]
        raw = url.split("://", 1)[1]
        slash = raw.find("/")
        rest = raw[slash:] if slash >= 0 else "/"
        rest = rest.split("#", 1)[0]
        if "?" not in rest and slash < 0 and "?" in raw:
            rest = "/?" + raw.split("?", 1)[1]
        self.request_uri: str = rest
        self.headers: Headers = Headers(headers)
        if "host" not in self.headers:
            authority = parts.netloc.rsplit("@", 1)[-1]
            self.headers.add("Host", authority)
        self.body: bytes = _body_bytes(body)
        if json is not None:
            self.body = _dumps(json).encode()
            self.headers.setdefault("Content-Type", "application/json")
        if form is not None:
            self.body = encode_args(form).encode()
            self.headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if self.body and "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            self.headers.add("Content-Length", str(len(self.body)))
        self.client_ip: str = client_ip
        self.client_port: int = client_port
        self.http_version: float = http_version
        self.client_certificate: str | None = client_certificate

    @property
    def raw_path(self) -> str:
        return self.request_uri.split("?", 1)[0]

    @property
    def raw_query(self) -> str:
        return self.request_uri.split("?", 1)[1] if "?" in self.request_uri else ""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.headers.get('host') or self.host}{self.request_uri}"

    def __repr__(self) -> str:
        return f"Request({self.method} {self.url})"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Response:
    """An HTTP response. Given as an upstream answer, or read as the client's."""

    def __init__(
        self,
        status: int = 200,
        headers: HeaderInput = None,
        body: Body = None,
        *,
        json: object = None,
    ) -> None:
        self.status: int = status
        self.headers: Headers = Headers(headers)
        self.body: bytes = _body_bytes(body)
        if json is not None:
            self.body = _dumps(json).encode()
            self.headers.setdefault("Content-Type", "application/json")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.headers, self.body) == (other.status, other.headers, other.body)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # pyright: ignore[reportIncompatibleMethodOverride]

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers.to_dict()!r}, {self.body[:80]!r})"


@dataclass
class ServiceRequest:
    """The request Kong sent to the upstream service (after the plugin's changes)."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    raw_query: str
    headers: Headers
    body: bytes
    retries: int = 5
    timeouts: tuple[int, int, int] = (60000, 60000, 60000)
    tls_verify: bool | None = None
    tls_verify_depth: int | None = None
    upstream: str | None = None

    @property
    def query(self) -> dict[str, ArgValue]:
        return decode_args(self.raw_query, 1000)

    @property
    def path_with_query(self) -> str:
        return self.path + ("?" + self.raw_query if self.raw_query else "")

    @property
    def url(self) -> str:
        default = _DEFAULT_PORTS.get(self.scheme)
        netloc = self.host if self.port == default else f"{self.host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path_with_query}"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.body)
