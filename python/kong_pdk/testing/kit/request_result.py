"""What one simulated request did: the ``Result`` a kit run returns.

It holds one ``kong_pdk.testing.kong.event_result.EventResult`` per phase that ran
(what the emulator saw on the wire) next to what the request did as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kong_pdk.testing.fake.exchange import Exchange, LogEntry, TlsState
from kong_pdk.testing.fake.pdk import Violation
from kong_pdk.testing.http.messages import Request, Response, ServiceRequest
from kong_pdk.testing.kit.servers import PluginError
from kong_pdk.testing.kong.event_result import EventResult

__all__ = ["Call", "Result", "KitFailure"]


@dataclass(frozen=True)
class Call:
    """One PDK call of the plugin: phase, method, arguments and what it got back."""

    phase: str
    method: str
    args: tuple[object, ...]
    result: object = None

    def __str__(self) -> str:
        args = ", ".join(repr(a) for a in self.args)
        return f"[{self.phase}] {self.method}({args}) -> {self.result!r}"


@dataclass
class Result:
    """The outcome of one request (or stream session, or TLS handshake)."""

    request: Request
    exchange: Exchange
    client_response: Response | None = None
    service_request: ServiceRequest | None = None
    upstream_response: Response | None = None
    phases: list[str] = field(default_factory=list)
    events: dict[str, EventResult] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    plugin_errors: list[PluginError] = field(default_factory=list)
    kong_log: list[str] = field(default_factory=list)

    @property
    def ctx(self) -> dict[str, Any]:
        """``kong.ctx.shared`` at the end of the request."""
        return self.exchange.ctx_shared

    @property
    def nginx_ctx(self) -> dict[str, Any]:
        return self.exchange.ngx_ctx

    @property
    def logs(self) -> list[LogEntry]:
        return self.exchange.logs

    def log_messages(self, level: str | None = None) -> list[str]:
        return [e.message for e in self.logs if level is None or e.level == level]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    @property
    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    @property
    def source(self) -> str:
        ex = self.exchange
        return "error" if ex.unexpected else "exit" if ex.exited else "service" if ex.proxied else "error"

    @property
    def consumer(self) -> Any:
        return self.exchange.consumer

    @property
    def credential(self) -> Any:
        return self.exchange.credential

    @property
    def tls(self) -> TlsState:
        return self.exchange.tls

    @property
    def stream_sent(self) -> bytes:
        """Bytes a stream (preread) exit sent to the client."""
        return self.exchange.stream_sent

    @property
    def status(self) -> int | None:
        return self.client_response.status if self.client_response else self.exchange.status

    def describe(self) -> str:
        lines = [f"{self.request.method} {self.request.url}"]
        lines += [f"  {c}" for c in self.calls]
        return "\n".join(lines)


class KitFailure(AssertionError):
    """The plugin did something Kong would refuse, or raised. ``result`` has the details."""

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result
