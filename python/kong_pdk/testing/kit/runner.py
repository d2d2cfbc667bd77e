"""The plugin test kit: run a plugin class through simulated requests.

    from kong_pdk.testing import PluginRunner, load_plugin

    hello = PluginRunner(load_plugin("examples/py-hello.py"), config={"message": "hi"})
    res = hello.http("GET", "http://example.com/")
    assert res.client_response.headers["x-hello-from-python"] == "Python says hi to example.com"

Every run goes through the real path: the plugin is served by our Rust server
in-process (``servers``), and Kong is played by the wire emulator over the Unix
socket (``kong_pdk.testing.kong``), answering PDK calls from the fake PDK
(``kong_pdk.testing.fake``) backed by the request's
``Exchange``. Phases run in Kong's order, only those the plugin implements:

* ``https``: certificate (the TLS handshake), then as ``http``;
* ``http``: rewrite, access, the upstream (``echo`` unless an ``upstream``
  response or function is given), response, log. An exit in rewrite/access
  skips the upstream and the response phase; log always runs;
* ``phase(name)``: one phase, after the upstream when it is response or log;
* ``stream``: preread (stream subsystem); ``tls``: certificate alone.

By default (``strict``) the run raises ``KitFailure`` when the plugin made a PDK
call Kong would refuse (unknown, wrong phase, bad argument) or a handler raised.
With ``strict=False`` the run shows what Kong would do instead: nil for an
unknown method, and for a Lua error the event is abandoned and, in
rewrite/access/response, the client gets a 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kong_pdk.plugin_check import MISSING, warn_plugin_mistakes
from kong_pdk.plugin_info import phases_of
from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.pdk import FakePdk
from kong_pdk.testing.fake.terminal import apply_error, apply_exit, apply_stream_exit
from kong_pdk.testing.fake.world import World, kit_uuid
from kong_pdk.testing.http.headers import HeaderInput, Headers
from kong_pdk.testing.http.messages import Body, Request, Response
from kong_pdk.testing.kit.loader import PluginSpec, load_plugin, plugin_spec
from kong_pdk.testing.kit.request_result import Call, KitFailure, Result
from kong_pdk.testing.kit.schema import validate_config
from kong_pdk.testing.kit.servers import Model, Served, served
from kong_pdk.testing.kit.upstream import Upstream, build_service_request, echo
from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.errors import RpcError

__all__ = ["PluginRunner", "load_plugin", "plugin_spec", "HTTP_PHASES"]

HTTP_PHASES = ("certificate", "rewrite", "access", "response", "log")
# Headers whose upstream value replaces one a plugin set earlier (nginx keeps one).
_SINGLE = frozenset({"content-type", "content-length", "location", "server", "date", "last-modified", "etag"})


class PluginRunner:
    """A plugin with one config, ready to run requests. Config is checked like Kong's Admin API.

    ``world`` (or keyword arguments naming ``World`` fields) sets what Kong knows
    beyond the request; ``answers`` overrides PDK functions by name (a value or a
    callable of the Lua arguments). ``model`` is how the handlers run, as the
    command line would run them: ``"auto"`` (no flag: greenlets on one loop
    thread when the plugin's code is known not to block, else threads;
    ``async def`` phases on the asyncio loop), ``"threads"`` or
    ``"greenlets"`` (``--model``), ``"gevent"`` (``-g``) or ``"processes"``
    (``-m workers``; the plugin must be a file ending with
    ``start_dedicated_server``).
    """

    def __init__(
        self,
        plugin: PluginSpec | type | str,
        config: Mapping[str, Any] | None = None,
        *,
        world: World | None = None,
        answers: Mapping[str, object] | None = None,
        plugin_id: str | None = None,
        model: Model = "auto",
        workers: int = 1,
        **world_fields: Any,
    ) -> None:
        if isinstance(plugin, str):
            plugin = load_plugin(plugin)
        elif isinstance(plugin, type):
            plugin = plugin_spec(plugin)
        self.spec: PluginSpec = plugin
        # A plugin file without a version is a mistake; a class written in a test is not.
        version = getattr(plugin.module, "version", MISSING) if plugin.path is not None else plugin.version
        warn_plugin_mistakes(plugin.cls, version, plugin.schema, stacklevel=2)
        self.config: dict[str, Any] = validate_config(plugin.schema, config)
        base = world or World()
        self.world: World = dataclasses.replace(base, **world_fields) if world_fields else base
        self.answers: dict[str, object] = dict(answers or {})
        self.plugin_id: str = plugin_id or kit_uuid(f"plugin/{plugin.name}/{cjson_encode(self.config)}")
        self.phases: set[str] = set(phases_of(plugin.cls))
        self.model: Model = model
        self.workers: int = workers

    def with_config(self, config: Mapping[str, Any] | None = None, **world_fields: Any) -> PluginRunner:
        return PluginRunner(
            self.spec,
            config if config is not None else {k: v for k, v in self.config.items()},
            world=dataclasses.replace(self.world, **world_fields) if world_fields else self.world,
            answers=self.answers,
            model=self.model,
            workers=self.workers,
        )

    @property
    def server(self) -> Served:
        return served(self.spec, self.model, self.workers)

    # -- entry points ----------------------------------------------------------------

    def http(
        self,
        method: str = "GET",
        url: str = "http://localhost/",
        headers: HeaderInput = None,
        body: Body = None,
        *,
        request: Request | None = None,
        upstream: Upstream | None = None,
        **options: Any,
    ) -> Result:
        req = request or _request(method, url, headers, body, options)
        return self._run(req, upstream, options, phases=HTTP_PHASES)

    def https(
        self,
        method: str = "GET",
        url: str = "https://localhost/",
        headers: HeaderInput = None,
        body: Body = None,
        *,
        request: Request | None = None,
        upstream: Upstream | None = None,
        **options: Any,
    ) -> Result:
        if url.startswith("http://"):
            url = "https://" + url[len("http://") :]
        req = request or _request(method, url, headers, body, options)
        return self._run(req, upstream, options, phases=HTTP_PHASES)

    def phase(
        self,
        name: str,
        method: str = "GET",
        url: str = "http://localhost/",
        headers: HeaderInput = None,
        body: Body = None,
        *,
        request: Request | None = None,
        upstream: Upstream | None = None,
        **options: Any,
    ) -> Result:
        if name not in HTTP_PHASES:
            raise ValueError(f"phase must be one of {', '.join(HTTP_PHASES)} (use stream() for preread)")
        self._require(name)
        req = request or _request(method, url, headers, body, options)
        return self._run(req, upstream, options, phases=(name,))

    def stream(self, *, request: Request | None = None, **options: Any) -> Result:
        """A stream (L4) session through the preread phase."""
        self._require("preread")
        req = request or _request("GET", "http://localhost/", None, None, options)
        return self._run(req, None, options, phases=("preread",), subsystem="stream")

    def tls(self, sni: str = "localhost", *, request: Request | None = None, **options: Any) -> Result:
        """A TLS handshake through the certificate phase."""
        self._require("certificate")
        req = request or _request("GET", f"https://{sni}/", None, None, options)
        return self._run(req, None, options, phases=("certificate",))

    def _require(self, phase: str) -> None:
        if phase not in self.phases:
            raise ValueError(f"{self.spec.cls.__name__} has no {phase} handler")

    # -- the run ---------------------------------------------------------------------

    def _run(
        self,
        req: Request,
        upstream: Upstream | None,
        options: Mapping[str, Any],
        phases: tuple[str, ...],
        subsystem: str = "http",
    ) -> Result:
        world_fields = {k: v for k, v in options.items() if k in _WORLD_FIELDS}
        world = dataclasses.replace(self.world, **world_fields) if world_fields else self.world
        ex = Exchange.begin(req, world, subsystem=subsystem, plugin_id=self.plugin_id)
        fake = FakePdk(ex, self.answers)
        result = Result(request=req, exchange=ex)
        srv = self.server
        emu = srv.emulator(subsystem, world.kong_version)
        for phase in phases:
            if phase == "certificate" and not req.scheme == "https":
                continue
            if phase in ("response", "log") and not ex.exited and not ex.proxied and not ex.unexpected:
                self._proxy(ex, result, upstream)
            if phase == "log":
                self._finish_response(ex, result)
            if phase == "response" and (ex.exited or ex.unexpected):
                continue
            if phase in self.phases:
                self._event(emu, srv, fake, ex, result, phase)
        if subsystem == "http" and phases != ("certificate",) and result.client_response is None:
            self._finish_response(ex, result)
        result.violations = list(fake.violations)
        self._verdict(result)
        return result

    def _event(self, emu: Any, srv: Served, fake: FakePdk, ex: Exchange, result: Result, phase: str) -> None:
        ex.phase = phase
        try:
            event = emu.run_phase(
                self.spec.name, self.config, phase, plugin_id=self.plugin_id, answers=fake.answers()
            )
        except RpcError as exc:
            raise KitFailure(f"Kong got an RPC error in the {phase} phase: {exc.message}", result) from exc
        result.phases.append(phase)
        result.events[phase] = event
        result.kong_log.extend(event.log)
        result.plugin_errors.extend(srv.take_errors())
        for call in event.calls:
            result.calls.append(Call(phase, call.method, call.args, call.data))
            if call.source in ("default", "unknown"):
                fake.note(call.method, f"{call.method} is not a function this Kong has (could not find pdk method)")
        if event.outcome in ("exit", "error"):
            self._terminal(fake, ex, event.calls[-1].method, event.calls[-1].args)
        if event.outcome == "lua_error" or ex.unexpected:
            self._lua_error(ex, phase)

    def _terminal(self, fake: FakePdk, ex: Exchange, method: str, args: tuple[object, ...]) -> None:
        from kong_pdk.testing.fake.phase_rules import phase_problem
        from kong_pdk.testing.kong.errors import LuaError

        problem = phase_problem(method, ex.phase)
        try:
            if problem is not None:
                raise LuaError(problem)
            if ex.subsystem == "stream":
                apply_stream_exit(ex, args)
            elif method == "kong.response.exit":
                apply_exit(ex, args)
            else:
                apply_error(ex, args)
        except LuaError as exc:
            fake.note(method, problem or f"{method}: {exc}")
            ex.unexpected = True

    def _lua_error(self, ex: Exchange, phase: str) -> None:
        """A Lua error in a handler: Kong answers 500 in rewrite/access/response."""
        ex.unexpected = True
        if phase in ("rewrite", "access", "response") and ex.subsystem == "http":
            ex.response_headers = Headers()
            apply_error(ex, (500,))
            ex.exited = False
        elif ex.subsystem == "stream":
            ex.status = 500

    def _proxy(self, ex: Exchange, result: Result, upstream: Upstream | None) -> None:
        service_request = build_service_request(ex)
        answer = upstream if upstream is not None else echo
        response = answer(service_request) if callable(answer) else answer
        result.service_request = service_request
        result.upstream_response = response
        ex.upstream_response = response
        ex.proxied = True
        ex.status = response.status
        # Headers plugins set before proxying stay; the upstream's follow them,
        # and replace those nginx keeps once (Content-Type …).
        merged = ex.response_headers.copy()
        for name, value in response.headers:
            if name.lower() in _SINGLE:
                merged.set(name, value)
            else:
                merged.add(name, value)
        ex.response_headers = merged
        ex.response_body = response.body

    def _finish_response(self, ex: Exchange, result: Result) -> None:
        """What the client gets; Kong's header filter adds its own headers here."""
        if result.client_response is not None:
            return
        if ex.subsystem != "http":
            return
        if ex.status is None:
            ex.status = 200
        headers = ex.response_headers
        world = ex.world
        if world.kong_headers:
            version = f"{world.kong_version[0]}.{world.kong_version[1]}.0"
            if ex.proxied and not ex.exited and not ex.unexpected:
                headers.set("Via", f"1.1 kong/{version}" if world.kong_version >= (3, 6) else f"kong/{version}")
                headers.set("X-Kong-Upstream-Latency", "0")
                headers.set("X-Kong-Proxy-Latency", "0")
            else:
                headers.set("Server", f"kong/{version}")
                headers.set("X-Kong-Response-Latency", "0")
            if world.kong_version >= (3, 5):
                headers.set("X-Kong-Request-Id", ex.request_id)
        body = ex.response_body or b""
        if ex.method == "HEAD" or ex.status in (204, 304):
            body = b""
        result.client_response = Response(ex.status, headers.copy(), body)

    def _verdict(self, result: Result) -> None:
        if not self.world_strict(result):
            return
        problems: list[str] = [str(v) for v in result.violations] + [str(e) for e in result.plugin_errors]
        if problems:
            detail = "\n".join(f"- {p}" for p in problems)
            raise KitFailure(
                f"{self.spec.name}: the plugin did something Kong would refuse or raised:\n{detail}\n"
                f"(pass strict=False to see what Kong would do instead)",
                result,
            )

    @staticmethod
    def world_strict(result: Result) -> bool:
        return result.exchange.world.strict


_WORLD_FIELDS = frozenset(f.name for f in dataclasses.fields(World))
_REQUEST_FIELDS = frozenset({"json", "form", "client_ip", "client_port", "http_version", "client_certificate"})


def _request(method: str, url: str, headers: HeaderInput, body: Body, options: Mapping[str, Any]) -> Request:
    unknown = set(options) - _WORLD_FIELDS - _REQUEST_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    extra = {k: v for k, v in options.items() if k in _REQUEST_FIELDS}
    return Request(method, url, headers, body, **extra)

