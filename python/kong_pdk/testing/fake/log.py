"""Fake ``kong.log.*`` and ``kong.telemetry.log``: what the plugin logs, as Kong writes it.

* ``kong.log.<level>(...)`` joins its arguments with ``tostring`` and no
  separator; ``kong.log(...)`` is notice; ``inspect`` joins with spaces and
  can be switched off;
* ``kong.log.serialize`` is a table here; the emulator sends it as JSON text
  like Kong's shim (§6.4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kong_pdk.testing.fake.client import forwarded_ip
from kong_pdk.testing.fake.exchange import Exchange, LogEntry
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.lua_args import lua_tostring, need_str, opt_arg
from kong_pdk.testing.http.args import decode_args
from kong_pdk.testing.kong.errors import LuaError

FUNCTIONS = FunctionTable()

_LEVELS = {
    "kong.log": "notice",
    "kong.log.emerg": "emerg",
    "kong.log.alert": "alert",
    "kong.log.crit": "crit",
    "kong.log.err": "err",
    "kong.log.warn": "warn",
    "kong.log.notice": "notice",
    "kong.log.info": "info",
    "kong.log.debug": "debug",
    "kong.log.trace": "trace",
    "kong.log.deprecation": "warn",
}


def _logger(name: str, level: str) -> Callable[..., None]:
    def log(ex: Exchange, *args: object) -> None:
        message = "".join(lua_tostring(a) for a in args)
        if name == "kong.log.deprecation":
            message = "deprecation: " + message
        ex.logs.append(LogEntry(level, message, ex.phase, args))

    return log


for _name, _level in _LEVELS.items():
    FUNCTIONS.add(_name, _logger(_name, _level))


@FUNCTIONS.define("kong.log.inspect")
def inspect(ex: Exchange, *args: object) -> None:
    if ex.inspect_on:
        ex.logs.append(LogEntry("notice", " ".join(lua_tostring(a) for a in args), ex.phase, args))


@FUNCTIONS.define("kong.log.inspect.on")
def inspect_on(ex: Exchange) -> None:
    ex.inspect_on = True


@FUNCTIONS.define("kong.log.inspect.off")
def inspect_off(ex: Exchange) -> None:
    ex.inspect_on = False


@FUNCTIONS.define("kong.log.set_format")
def set_format(ex: Exchange, *args: object) -> None:
    fmt = opt_arg(args, 0)
    ex.log_format = None if fmt is None else need_str(fmt, "format")


@FUNCTIONS.define("kong.log.set_serialize_value")
def set_serialize_value(ex: Exchange, *args: object) -> None:
    key = need_str(opt_arg(args, 0), "key")
    value = opt_arg(args, 1)
    options = opt_arg(args, 2)
    mode = "set"
    if isinstance(options, Mapping) and options.get("mode") is not None:
        mode = str(options["mode"])
        if mode not in ("set", "add", "replace"):
            raise LuaError("mode must be 'set', 'add' or 'replace'")
    if value is not None and not isinstance(value, (str, int, float, bool, dict, list)):
        raise LuaError("value must be a number, string, boolean, table or nil")
    exists = key in ex.serialize_extras
    if mode == "add" and exists or mode == "replace" and not exists:
        return
    ex.serialize_extras[key] = value


def _set_path(table: dict[str, Any], dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = table
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


@FUNCTIONS.define("kong.log.serialize")
def serialize(ex: Exchange) -> object:
    """The basic log serializer's table (the emulator sends it as JSON text)."""
    req = ex.request
    res_headers = ex.response_headers.to_lua()
    data: dict[str, Any] = {
        "request": {
            "method": ex.method,
            "uri": req.request_uri,
            "url": f"{req.scheme}://{req.host}:{req.port}{req.request_uri}",
            "size": len(req.body),
            "querystring": _query_for_log(ex.raw_query),
            "headers": ex.headers.to_lua(),
            "id": ex.request_id,
        },
        "upstream_uri": ex.upstream_uri + ("?" + ex.raw_query if ex.raw_query else ""),
        "response": {
            "status": ex.status if ex.status is not None else 200,
            "headers": res_headers,
            "size": len(ex.response_body or b""),
        },
        "tries": [{"ip": ex.target_host, "port": ex.target_port, "balancer_latency": 0}] if ex.proxied else [],
        "latencies": {"kong": 0, "proxy": 0 if ex.proxied else -1, "request": ex.elapsed_ms, "receive": 0},
        "client_ip": forwarded_ip(ex),
        "started_at": int(ex.start_time * 1000),
        "source": "exit" if ex.exited else ("service" if ex.proxied else "error"),
        "workspace": ex.world.route and "default",
    }
    if ex.world.route is not None:
        data["route"] = dict(ex.world.route)
    if ex.world.service is not None:
        data["service"] = dict(ex.world.service)
    if ex.consumer is not None:
        data["consumer"] = ex.consumer
    if ex.credential is not None and isinstance(ex.credential, Mapping):
        data["authenticated_entity"] = {"id": ex.credential.get("id")}
    if ex.upstream_response is not None:
        data["upstream_status"] = str(ex.upstream_response.status)
    for key, value in ex.serialize_extras.items():
        _set_path(data, key, value)
    return data


def _query_for_log(raw_query: str) -> dict[str, Any]:
    return dict(decode_args(raw_query, 100))


@FUNCTIONS.define("kong.telemetry.log")
def telemetry_log(ex: Exchange, *args: object) -> None:
    ex.telemetry.append(args)
