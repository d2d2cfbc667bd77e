"""Facts about PDK functions that change what Kong puts on the wire.

Read from ``kong_pdk/pdk/pdk-api.json`` (described in docs/architecture.md, "The PDK data file"):

* which names Kong can resolve at all (an unresolvable name is answered like an unknown
  method, docs/protocol.md §5.1);
* the typed ``plugin.Step*`` method Kong picks by name (§5.3);
* which results Kong rewrites: multimaps (§6.1), raw bodies packed as bin (§6.2), and
  ``kong.log.serialize`` turned into JSON text (§6.4);
* which calls are terminal: Kong never sends anything more for that event (§5.2.3).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PdkFacts", "pdk_facts", "PDK_API_JSON"]

PDK_API_JSON = Path(__file__).resolve().parents[2] / "pdk" / "pdk-api.json"


@dataclass(frozen=True)
class PdkFacts:
    known: frozenset[str]
    step_methods: Mapping[str, str]
    multimap: frozenset[str]
    binary_results: frozenset[str]
    json_text: frozenset[str]
    terminal: frozenset[str]


@functools.cache
def pdk_facts() -> PdkFacts:
    with PDK_API_JSON.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    functions: list[dict[str, Any]] = data["functions"]

    def named(encoding: str) -> frozenset[str]:
        return frozenset(fn["name"] for fn in functions if fn.get("wire_encoding") == encoding)

    return PdkFacts(
        known=frozenset(fn["name"] for fn in functions if fn.get("bridge") != "unresolvable"),
        step_methods={fn["name"]: fn["step_method"] for fn in functions if fn.get("step_method")},
        multimap=frozenset(data["multimap_functions"]) | named("multimap"),
        # binary_functions also lists functions that *accept* bytes; only results matter here.
        binary_results=named("binary"),
        json_text=named("json_text"),
        terminal=frozenset(data["terminal_functions"]),
    )
