"""How Kong answers a PDK call: which ``plugin.Step*`` method, and what ``Data`` (§5.3, §6).

From the function's return values Kong decides:

1. Kong <= 2.8 only (all return values kept): first value nil/false and an error value
   -> ``plugin.StepError`` with ``Data = error``. Kong 3.x keeps only the first return
   value, so this never happens there;
2. a table result with a ``_method`` field -> that Step method;
3. a fixed method per PDK name (StepCredential, StepConsumer, StepMemoryStats, StepRoute,
   StepService, StepMultiMap);
4. otherwise ``plugin.Step``.

A nil result leaves ``Data`` out of the request entirely (§3.2). Before sending, Kong
rewrites multimaps (§6.1), packs raw bodies as bin on 3.x (§6.2) and hands back
``kong.log.serialize`` as JSON text (§6.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import NULL
from kong_pdk.testing.kong.luapack import Bin
from kong_pdk.testing.kong.multimap import kong_multimap
from kong_pdk.testing.kong.pdk_facts import pdk_facts

__all__ = ["StepChoice", "choose_step", "PLAIN_STEP"]

PLAIN_STEP = "plugin.Step"


@dataclass(frozen=True)
class StepChoice:
    method: str
    has_data: bool
    data: object = None  # the value Kong packs (may hold Bin / AsMap markers)


def choose_step(pdk_method: str, returns: tuple[object, ...], kong_version: tuple[int, int]) -> StepChoice:
    facts = pdk_facts()
    result = returns[0] if returns else None
    if kong_version < (3, 0):
        err = returns[1] if len(returns) > 1 else None
        if (result is None or result is False) and err is not None:
            return StepChoice("plugin.StepError", True, err)
        if _contains_null(result):
            # Before 3.0 Kong's encoder had no packer for cjson.null (§6.3, §9).
            raise LuaError("cannot pack cjson.null (Kong < 3.0)")
    if result is None:
        method = facts.step_methods.get(pdk_method, PLAIN_STEP)
        return StepChoice(method, False)

    if isinstance(result, Mapping) and result.get("_method") is not None:
        method = str(result["_method"])
    else:
        method = facts.step_methods.get(pdk_method, PLAIN_STEP)

    data = result
    if pdk_method in facts.multimap:
        data = kong_multimap(result)
    elif pdk_method in facts.binary_results and kong_version >= (3, 0):
        if isinstance(result, (str, bytes)):
            data = Bin(result)
    elif pdk_method in facts.json_text and not isinstance(result, (str, bytes)):
        data = cjson_encode(result)
    return StepChoice(method, True, data)


def _contains_null(value: object, depth: int = 0) -> bool:
    if value is NULL:
        return True
    if depth > 100:
        return False
    if isinstance(value, Mapping):
        return any(_contains_null(v, depth + 1) for v in value.values())
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return any(_contains_null(v, depth + 1) for v in value)
    return False
