"""Fake ``kong.ctx.shared`` and ``kong.nginx.*``: the request's context tables and nginx's view.

* ``ctx.shared`` is one table per request, shared by all phases; values are
  stored as they arrived and sent back through Kong's encoder, so bytes come
  back as str (docs/protocol.md §11.1) and ``{}`` as ``[]`` (§11.3);
* ``kong.nginx.get_ctx``/``set_ctx`` are ``ngx.ctx``; ``get_var`` reads
  nginx's variables (``nginx_vars``).
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.lua_args import lua_tostring, need_str, opt_arg
from kong_pdk.testing.fake.nginx_vars import nginx_var

FUNCTIONS = FunctionTable()


# ctx.shared and ngx.ctx are both plain Lua tables keyed by tostring(key):
# storing nil removes the key, as assigning nil does in Lua.


def _table_get(table: dict[str, object], args: tuple[object, ...]) -> object:
    return table.get(lua_tostring(opt_arg(args, 0)))


def _table_set(table: dict[str, object], args: tuple[object, ...]) -> None:
    key = lua_tostring(opt_arg(args, 0))
    value = opt_arg(args, 1)
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


# -- kong.ctx.shared -----------------------------------------------------------------


@FUNCTIONS.define("kong.ctx.shared.get")
def ctx_get(ex: Exchange, *args: object) -> object:
    return _table_get(ex.ctx_shared, args)


@FUNCTIONS.define("kong.ctx.shared.set")
def ctx_set(ex: Exchange, *args: object) -> None:
    _table_set(ex.ctx_shared, args)


# -- kong.nginx ----------------------------------------------------------------------


@FUNCTIONS.define("kong.nginx.get_var")
def get_var(ex: Exchange, *args: object) -> object:
    return nginx_var(ex, need_str(opt_arg(args, 0), "name"))


@FUNCTIONS.define("kong.nginx.get_ctx")
def get_ctx(ex: Exchange, *args: object) -> object:
    return _table_get(ex.ngx_ctx, args)


@FUNCTIONS.define("kong.nginx.set_ctx")
def set_ctx(ex: Exchange, *args: object) -> None:
    _table_set(ex.ngx_ctx, args)


@FUNCTIONS.define("kong.nginx.get_subsystem")
def get_subsystem(ex: Exchange) -> str:
    return ex.subsystem


@FUNCTIONS.define("kong.nginx.get_tls1_version_str")
def get_tls1_version_str(ex: Exchange) -> object:
    return "TLSv1.3" if ex.is_https else None


@FUNCTIONS.define("kong.nginx.req_start_time")
def req_start_time(ex: Exchange) -> float:
    return ex.start_time


@FUNCTIONS.define("kong.nginx.get_statistics")
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
