"""Fake ``kong.vault.*``: references (``{vault://env/x}``) resolved from ``World.vault``."""

from __future__ import annotations

import re

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.lua_args import lua_tostring, need_str, opt_arg
from kong_pdk.testing.http.args import decode_args
from kong_pdk.testing.kong.lua import LuaMulti

FUNCTIONS = FunctionTable()

_REFERENCE = re.compile(r"^\{vault://([a-z0-9_-]+)/([^/?#}]+)(?:/([^/?#}]+))?(?:/(\d+))?(?:\?([^}]*))?\}$")


def _is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith("{vault://") and value.endswith("}")


@FUNCTIONS.define("kong.vault.is_reference")
def vault_is_reference(ex: Exchange, *args: object) -> bool:
    return _is_reference(opt_arg(args, 0))


@FUNCTIONS.define("kong.vault.parse_reference")
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
            out["config"] = decode_args(query)
    return out


@FUNCTIONS.define("kong.vault.get")
def vault_get(ex: Exchange, *args: object) -> object:
    ref = need_str(opt_arg(args, 0), "reference")
    if ref in ex.world.vault:
        return ex.world.vault[ref]
    return LuaMulti(None, f"unable to load value ({ref}) from vault: not found")


@FUNCTIONS.define("kong.vault.update")
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


@FUNCTIONS.define("kong.vault.flush", "kong.vault.init_worker", "kong.vault.warmup")
def vault_nothing(ex: Exchange, *args: object) -> None:
    return None
