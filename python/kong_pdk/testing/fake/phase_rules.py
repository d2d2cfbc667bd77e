"""Where Kong lets an external plugin call each PDK function.

The phases are read from pdk-api.json exactly as the native core reads them
(``src/pdk_table.rs``, which embeds the same file): ``external_phases``, or no
limit at all when ``phases`` is null (Kong checks no phase). Where Kong's code
and its docs disagree the data file follows the code (``kong.response.exit`` /
``error`` are allowed in ``response``: their ``check_phase`` includes it), so
the kit and the core's warning never disagree. On top of that, two rules the
core does not check:

* a function needs the edition and version of Kong that has it (Enterprise
  functions, ``clear_query_arg`` since 3.9); otherwise Kong answers "could not
  find pdk method";
* the ``log`` phase runs in a timer after the response (docs/protocol.md §5.4): only
  what Kong's plugin-server shim answers from its snapshot (§6.4), and functions
  that need no live request (logging, ctx, node, vault …) work there. Anything
  else raises in the timer, so Kong abandons the event.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from kong_pdk.testing.kong.pdk_facts import PDK_API_JSON

__all__ = ["FunctionRule", "rules", "LOG_TIMER_OK", "phase_problem"]

LOG_TIMER_OK = frozenset(
    {
        # Kong's shim answers these from the snapshot (§6.4).
        "kong.log.serialize",
        "kong.nginx.get_var",
        "kong.nginx.get_tls1_version_str",
        "kong.nginx.get_ctx",
        "kong.nginx.set_ctx",
        "kong.nginx.req_start_time",
        "kong.ctx.shared.get",
        "kong.ctx.shared.set",
        "kong.request.get_headers",
        "kong.request.get_header",
        "kong.request.get_uri_captures",
        "kong.response.get_status",
        "kong.response.get_headers",
        "kong.response.get_header",
        "kong.response.get_source",
        # Read only ngx.ctx (cloned into the timer, 3.1+) or nothing of the request.
        "kong.request.get_start_time",
        "kong.client.get_consumer",
        "kong.client.get_credential",
        "kong.client.get_consumer_group",
        "kong.client.get_consumer_groups",
        "kong.router.get_route",
        "kong.router.get_service",
        "kong.plugin.get_id",
        "kong.nginx.get_subsystem",
        "kong.node.get_id",
        "kong.node.get_hostname",
        "kong.node.get_memory_stats",
        "kong.cluster.get_id",
        "kong.ip.is_trusted",
        "kong.telemetry.log",
    }
)


def _works_in_timer(name: str) -> bool:
    return (
        name in LOG_TIMER_OK
        or name == "kong.log"
        or name.startswith("kong.log.")
        or name.startswith("kong.vault.")
        or name.startswith("kong.table.")
    )


@dataclass(frozen=True)
class FunctionRule:
    name: str
    phases: tuple[str, ...] | None
    enterprise: bool
    since: tuple[int, int] | None
    until: tuple[int, int] | None
    rpc_callable: bool


@functools.cache
def rules() -> dict[str, FunctionRule]:
    with PDK_API_JSON.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    out: dict[str, FunctionRule] = {}
    for fn in data["functions"]:
        name = fn["name"]
        # As the core reads it: ``phases: null`` means Kong checks no phase.
        listed = fn.get("external_phases")
        phases = None if fn.get("phases") is None or listed is None else tuple(listed)
        versions = fn.get("in_lua_pdk") or {}
        since = until = None
        if versions.get("3.8.1") is False and versions.get("3.9.3"):
            since = (3, 9)
        if versions.get("3.9.3") and versions.get("master") is False:
            until = (3, 9)
        out[name] = FunctionRule(
            name=name,
            phases=phases,
            enterprise=fn.get("edition") == "enterprise",
            since=since,
            until=until,
            rpc_callable=bool(fn.get("rpc_callable")),
        )
    return out


def exists(name: str, kong_version: tuple[int, int], enterprise: bool) -> bool:
    rule = rules().get(name)
    if rule is None or not rule.rpc_callable:
        return False
    if rule.enterprise and not enterprise:
        return False
    if rule.since is not None and kong_version < rule.since:
        return False
    if rule.until is not None and kong_version > rule.until:
        return False
    return True


def phase_problem(name: str, phase: str) -> str | None:
    """Why Kong refuses ``name`` in ``phase``, or None when it is allowed."""
    rule = rules().get(name)
    if rule is None:
        return None
    if rule.phases is not None and phase not in rule.phases:
        where = ", ".join(rule.phases) or "no phase of an external plugin"
        return f"{name} cannot be called in the {phase} phase; Kong allows it in: {where}"
    if phase == "log" and not _works_in_timer(name):
        return (
            f"{name} cannot be called in the log phase of an external plugin: Kong runs that "
            "phase in a timer after the response, where only its saved snapshot (request and "
            "response headers, status, ctx, serialize …) is available (docs/protocol.md §5.4, §6.4)"
        )
    return None
