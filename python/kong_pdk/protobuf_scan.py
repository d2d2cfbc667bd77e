"""The PDK calls a plugin file makes, found by reading its source (no import).

``kong-pdk check`` uses it to list the calls ProtoBuf:1 lacks: on that wire
such a call raises ``NotImplementedError`` where it is made (docs/protobuf.md).
A call is ``<root>.<path>(...)`` whose ``kong.<path>`` is a PDK function, where
``<root>`` is ``kong`` or the first parameter of a function in the file (the
``kong`` object a handler receives, whatever its name). A call through another
variable (``req = kong.request; req.get_body()``) is not seen.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kong_pdk.protocol import protobuf_functions

__all__ = ["PdkCall", "pdk_calls", "lacking_on_protobuf"]


@dataclass(frozen=True)
class PdkCall:
    line: int
    name: str


@cache
def _pdk_functions() -> frozenset[str]:
    data = json.loads((Path(__file__).parent / "pdk" / "pdk-api.json").read_text(encoding="utf-8"))
    return frozenset(f["name"] for f in data["functions"])


def _roots(tree: ast.AST) -> set[str]:
    roots = {"kong"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in node.args.posonlyargs + node.args.args]
            if params and params[0] in ("self", "cls"):
                params = params[1:]
            if params:
                roots.add(params[0])
    return roots


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def pdk_calls(source: str) -> list[PdkCall]:
    """Every PDK call of ``source``, in order; SyntaxError if it does not parse."""
    tree = ast.parse(source)
    roots = _roots(tree)
    functions = _pdk_functions()
    found: list[PdkCall] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts = _dotted(node.func)
        if not parts or len(parts) < 2 or parts[0] not in roots:
            continue
        name = ".".join(["kong", *parts[1:]])
        if name in functions:
            found.append(PdkCall(node.lineno, name))
    return sorted(found, key=lambda c: (c.line, c.name))


def lacking_on_protobuf(source: str) -> list[PdkCall]:
    """The PDK calls of ``source`` that ProtoBuf:1 does not have."""
    have = protobuf_functions()
    return [c for c in pdk_calls(source) if c.name not in have]
