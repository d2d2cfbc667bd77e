"""Fake ``kong.node.*``, ``kong.cluster.get_id`` and ``kong.ip.is_trusted``: the Kong node itself."""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.iptrust import is_trusted
from kong_pdk.testing.fake.lua_args import need_number, need_str, opt_arg
from kong_pdk.testing.kong.errors import LuaError

FUNCTIONS = FunctionTable()


@FUNCTIONS.define("kong.node.get_id")
def node_id(ex: Exchange) -> str:
    return ex.world.node_id


@FUNCTIONS.define("kong.node.get_hostname")
def node_hostname(ex: Exchange) -> str:
    return ex.world.hostname


_UNITS = {"b": (1, ""), "k": (1024, "KiB"), "m": (1024**2, "MiB"), "g": (1024**3, "GiB")}


@FUNCTIONS.define("kong.node.get_memory_stats")
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


@FUNCTIONS.define("kong.cluster.get_id")
def cluster_id(ex: Exchange) -> object:
    return ex.world.cluster_id or ex.world.node_id


@FUNCTIONS.define("kong.ip.is_trusted")
def ip_is_trusted(ex: Exchange, *args: object) -> bool:
    return is_trusted(need_str(opt_arg(args, 0), "address"), ex.world.trusted_ips)
