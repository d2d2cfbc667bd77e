"""Helpers for the kit's own tests: a plugin that makes the PDK calls a test lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kong_pdk.testing import PluginRunner
from kong_pdk.testing.kit.loader import PluginSpec, load_plugin
from kong_pdk.testing.kit.request_result import Result

HERE = Path(__file__).parent
CALLER: PluginSpec = load_plugin(HERE / "plugins" / "caller.py")


def runner(calls: dict[str, list[list[Any]]], **options: Any) -> PluginRunner:
    return PluginRunner(CALLER, {"calls": json.dumps(calls)}, **options)


def call(_phase: str, _method: str, *args: Any, mode: str = "http", **options: Any) -> Result:
    """Run one request whose plugin makes ``_method(*args)`` in ``_phase``."""
    world = {k: options.pop(k) for k in list(options) if k in _WORLD}
    r = runner({_phase: [[_method, list(args)]]}, **world)
    if mode == "stream":
        return r.stream(**options)
    if mode == "tls":
        return r.tls(**options)
    if mode == "https":
        return r.https(**options)
    return r.http(**options)


def returned(res: Result, method: str) -> Any:
    """What the plugin got back from its (last) call to ``method``."""
    calls = res.calls_to(method)
    assert calls, f"{method} was not called: {res.methods}"
    return calls[-1].result


_WORLD = {
    "route", "service", "consumer", "credential", "consumers", "trusted_ips", "real_ip_header", "vault",
    "upstreams", "uri_captures", "nginx_vars", "node_id", "hostname", "cluster_id", "kong_version",
    "strict", "enterprise", "kong_headers", "worker_pid",
}

