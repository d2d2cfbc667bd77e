"""Fake ``kong.ctx.shared``, ``kong.log``, ``kong.nginx``, ``kong.node``, ``kong.ip``,
``kong.vault``, ``kong.cluster``, ``kong.table``, ``kong.telemetry`` and JWE.

* ``ctx.shared`` is one table per request, shared by all phases; values are
  stored as they arrived and sent back through Kong's encoder, so bytes come
  back as str (docs/protocol.md §11.1) and ``{}`` as ``[]`` (§11.3);
* ``kong.log.<level>(...)`` joins its arguments with ``tostring`` and no
  separator; ``kong.log(...)`` is notice; ``inspect`` joins with spaces and
  can be switched off;
* ``kong.log.serialize`` is a table here; the emulator sends it as JSON text
  like Kong's shim (§6.4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kong_pdk.testing.errors import LuaError
from kong_pdk.testing.exchange import Exchange, LogEntry
from kong_pdk.testing.fake_client import forwarded_ip
from kong_pdk.testing.fake_registry import lua_tostring, need_number, need_str, opt_arg, pdk
from kong_pdk.testing.iptrust import is_trusted
from kong_pdk.testing.lua import NULL, LuaMulti
from kong_pdk.testing.nginx_vars import nginx_var

# -- kong.ctx.shared -----------------------------------------------------------------


@pdk("kong.ctx.shared.get")
def ctx_get(ex: Exchange, *args: object) -> object:
    return ex.ctx_shared.get(lua_tostring(opt_arg(args, 0)))


@pdk("kong.ctx.shared.set")
def ctx_set(ex: Exchange, *args: object) -> None:
    key = lua_tostring(opt_arg(args, 0))
    value = opt_arg(args, 1)
    if value is None:
        ex.ctx_shared.pop(key, None)
    else:
        ex.ctx_shared[key] = value


# -- kong.log ------------------------------------------------------------------------

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


def _make_logger(name: str, level: str) -> None:
    @pdk(name)
    def log(ex: Exchange, *args: object) -> None:
        message = "".join(lua_tostring(a) for a in args)
        if name == "kong.log.deprecation":
            message = "deprecation: " + message
        ex.logs.append(LogEntry(level, message, ex.phase, args))


for _name, _level in _LEVELS.items():
    _make_logger(_name, _level)


@pdk("kong.log.inspect")
def inspect(ex: Exchange, *args: object) -> None:
    if ex.inspect_on:
        ex.logs.append(LogEntry("notice", " ".join(lua_tostring(a) for a in args), ex.phase, args))


@pdk("kong.log.inspect.on")
def inspect_on(ex: Exchange) -> None:
    ex.inspect_on = True


@pdk("kong.log.inspect.off")
def inspect_off(ex: Exchange) -> None:
    ex.inspect_on = False


@pdk("kong.log.set_format")
def set_format(ex: Exchange, *args: object) -> None:
    fmt = opt_arg(args, 0)
    ex.log_format = None if fmt is None else need_str(fmt, "format")


@pdk("kong.log.set_serialize_value")
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


@pdk("kong.log.serialize")
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
    from kong_pdk.testing.args import decode_args

    return dict(decode_args(raw_query, 100))


# -- kong.nginx ----------------------------------------------------------------------


@pdk("kong.nginx.get_var")
def get_var(ex: Exchange, *args: object) -> object:
    return nginx_var(ex, need_str(opt_arg(args, 0), "name"))


@pdk("kong.nginx.get_ctx")
def get_ctx(ex: Exchange, *args: object) -> object:
    return ex.ngx_ctx.get(lua_tostring(opt_arg(args, 0)))


@pdk("kong.nginx.set_ctx")
def set_ctx(ex: Exchange, *args: object) -> None:
    key = lua_tostring(opt_arg(args, 0))
    value = opt_arg(args, 1)
    if value is None:
        ex.ngx_ctx.pop(key, None)
    else:
        ex.ngx_ctx[key] = value


@pdk("kong.nginx.get_subsystem")
def get_subsystem(ex: Exchange) -> str:
    return ex.subsystem


@pdk("kong.nginx.get_tls1_version_str")
def get_tls1_version_str(ex: Exchange) -> object:
    return "TLSv1.3" if ex.is_https else None


@pdk("kong.nginx.req_start_time")
def req_start_time(ex: Exchange) -> float:
    return ex.start_time


@pdk("kong.nginx.get_statistics")
def get_statistics(ex: Exchange) -> object:
    return {
        "connections_active": 1,
        "connections_reading": 0,
        "connections_writing": 1,
        "connections_waiting": 0,
        "connections_accepted": 1,
        "connections_handled": 1,
        "total_requests": 1,
    }


# -- kong.node, kong.cluster, kong.ip --------------------------------------------------


@pdk("kong.node.get_id")
def node_id(ex: Exchange) -> str:
    return ex.world.node_id


@pdk("kong.node.get_hostname")
def node_hostname(ex: Exchange) -> str:
    return ex.world.hostname


_UNITS = {"b": (1, ""), "k": (1024, "KiB"), "m": (1024**2, "MiB"), "g": (1024**3, "GiB")}


@pdk("kong.node.get_memory_stats")
def get_memory_stats(ex: Exchange, *args: object) -> object:
    unit = opt_arg(args, 0)
    scale = opt_arg(args, 1)
    unit_key = "b" if unit is None else need_str(unit, "unit").lower()
    if unit_key not in _UNITS:
        raise LuaError(f"invalid unit '{unit}' (expected 'k/K', 'm/M', or 'g/G')")
    digits = 2 if scale is None else int(need_number(scale, "scale"))

    def size(n: int) -> object:
        div, name = _UNITS[unit_key]
        return n if unit_key == "b" else f"{n / div:.{digits}f} {name}"

    return {
        "lua_shared_dicts": {
            "kong": {"allocated_slabs": size(40960), "capacity": size(5242880)},
            "kong_db_cache": {"allocated_slabs": size(798720), "capacity": size(134217728)},
        },
        "workers_lua_vms": [{"http_allocated_gc": size(35651584), "pid": ex.world.worker_pid}],
    }


@pdk("kong.cluster.get_id")
def cluster_id(ex: Exchange) -> object:
    return ex.world.cluster_id or ex.world.node_id


@pdk("kong.ip.is_trusted")
def ip_is_trusted(ex: Exchange, *args: object) -> bool:
    return is_trusted(need_str(opt_arg(args, 0), "address"), ex.world.trusted_ips)


# -- kong.vault ------------------------------------------------------------------------

_REFERENCE = re.compile(r"^\{vault://([a-z0-9_-]+)/([^/?#}]+)(?:/([^/?#}]+))?(?:/(\d+))?(?:\?([^}]*))?\}$")


def _is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith("{vault://") and value.endswith("}")


@pdk("kong.vault.is_reference")
def vault_is_reference(ex: Exchange, *args: object) -> bool:
    return _is_reference(opt_arg(args, 0))


@pdk("kong.vault.parse_reference")
def vault_parse_reference(ex: Exchange, *args: object) -> object:
    ref = opt_arg(args, 0)
    if not _is_reference(ref):
        return LuaMulti(None, f"not a reference [{lua_tostring(ref)}]")
    assert isinstance(ref, str)
    m = _REFERENCE.match(ref)
    if not m:
        return LuaMulti(None, f"invalid reference [{ref}]")
    name, resource, key, version, query = m.groups()
    out: dict[str, object] = {"name": name, "resource": resource}
    if key:
        out["key"] = key
    if version:
        out["version"] = int(version)
    if query:
        from kong_pdk.testing.args import decode_args

        out["config"] = decode_args(query)
    return out


@pdk("kong.vault.get")
def vault_get(ex: Exchange, *args: object) -> object:
    ref = need_str(opt_arg(args, 0), "reference")
    if ref in ex.world.vault:
        return ex.world.vault[ref]
    return LuaMulti(None, f"unable to load value ({ref}) from vault: not found")


@pdk("kong.vault.update")
def vault_update(ex: Exchange, *args: object) -> object:
    options = opt_arg(args, 0)

    def resolve(value: object) -> object:
        if isinstance(value, str) and _is_reference(value):
            return ex.world.vault.get(value, value)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return resolve(options)


@pdk("kong.vault.flush", "kong.vault.init_worker", "kong.vault.warmup")
def vault_nothing(ex: Exchange, *args: object) -> None:
    return None


# -- kong.table, kong.telemetry, JWE -----------------------------------------------------


@pdk("kong.table.new")
def table_new(ex: Exchange, *args: object) -> object:
    return {}


@pdk("kong.table.clear")
def table_clear(ex: Exchange, *args: object) -> None:
    return None


@pdk("kong.table.merge")
def table_merge(ex: Exchange, *args: object) -> object:
    merged: dict[object, object] = {}
    for table in args[:2]:
        if isinstance(table, dict):
            merged.update(table)
        elif isinstance(table, list):
            merged.update({i + 1: v for i, v in enumerate(table)})
    return merged


@pdk("kong.telemetry.log")
def telemetry_log(ex: Exchange, *args: object) -> None:
    ex.telemetry.append(args)


@pdk("kong.enterprise_edition.jwe.decode", "kong.enterprise_edition.jwe.decrypt", "kong.enterprise_edition.jwe.encrypt")
def jwe(ex: Exchange, *args: object) -> object:
    return LuaMulti(None, "JWE is not simulated by the test kit; answer it with an override")


_ = NULL  # cjson.null is part of entities built elsewhere
