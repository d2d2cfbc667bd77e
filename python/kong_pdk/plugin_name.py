"""The name a plugin file gives itself, as Kong will know it.

A dedicated plugin file names itself in its ``start_dedicated_server("name",
...)`` call, and that name is what ``--dump`` prints and Kong registers; the
file name may differ (a file py_lookup calling itself ``"py-lookup"``). ``kong-pdk check``
reads the call without running it (it sits under ``if __name__ ==
"__main__"``): the first argument, or ``name=``, as a string literal or a
module-level string constant.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

__all__ = ["declared_name"]

ENTRY_POINT = "start_dedicated_server"


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def declared_name(path: Path, module: ModuleType | None = None) -> str | None:
    """The plugin name of the file's ``start_dedicated_server`` call; ``None``
    when there is no such call or its name is not a constant we can read."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called_name(node) == ENTRY_POINT):
            continue
        arg: ast.expr | None = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg == "name":
                arg = keyword.value
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name) and module is not None:
            value = getattr(module, arg.id, None)
            if isinstance(value, str):
                return value
        return None
    return None
