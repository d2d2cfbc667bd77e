"""Whether a plugin's code is known not to block, read from its source.

The default execution model (``--model auto``) runs plain ``def`` handlers as
greenlets on one loop thread when nothing in the plugin's module can block
that thread, and on threads otherwise (docs/execution-models.md). On one loop
thread, 64 events in flight cost no thread switch and no contention for the
GIL; on threads, each PDK call wakes the handler's own thread. But a handler
that blocks on the loop thread (a ``time.sleep``, an HTTP call, a database
query) holds every other event meanwhile, so the loop is chosen only when the
module's code provably cannot do that.

The test is static and conservative: it reads the module that defines the
plugin class and accepts only modules whose every import is in a list of
pure, in-memory modules (``json``, ``re``, ``hashlib``...), or in a list of
names of a module that has blocking calls too (``time.time`` but not
``time.sleep``; ``os.getenv`` but not ``os.system``), and that calls none of
``open``, ``input``, ``exec``, ``eval``, ``compile``, ``__import__`` or
``breakpoint``. Anything else (a third-party client, a module of the plugin's
own, a relative import, source that cannot be read) answers "may block", and
the handlers run on threads: the model that is always safe. Code that computes
for long without any call also holds the loop; the core's stall watchdog
names such a handler (``--model threads`` then keeps it off the loop).
"""

from __future__ import annotations

import ast
import sys
import tokenize

__all__ = ["blocking_reason"]

#: Modules whose every function works in memory: importing and calling any
#: of their names cannot block the thread on I/O or on another thread.
PURE_MODULES = frozenset(
    {
        "__future__",
        "abc",
        "array",
        "base64",
        "binascii",
        "bisect",
        "calendar",
        "cmath",
        "collections",
        "collections.abc",
        "contextlib",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "hashlib",
        "heapq",
        "hmac",
        "html",
        "ipaddress",
        "itertools",
        "json",
        "math",
        "numbers",
        "operator",
        "random",
        "re",
        "secrets",
        "statistics",
        "string",
        "struct",
        "textwrap",
        "types",
        "typing",
        "typing_extensions",
        "unicodedata",
        "urllib.parse",
        "uuid",
        "zlib",
    }
)

#: Modules with blocking calls too: the names of theirs that cannot block.
PURE_NAMES = {
    "time": frozenset(
        {
            "time",
            "time_ns",
            "monotonic",
            "monotonic_ns",
            "perf_counter",
            "perf_counter_ns",
            "process_time",
            "gmtime",
            "localtime",
            "mktime",
            "strftime",
            "strptime",
            "timezone",
            "altzone",
            "daylight",
            "tzname",
            "struct_time",
        }
    ),
    "os": frozenset({"getenv", "environ", "getpid", "path", "sep", "linesep", "name", "fspath", "urandom"}),
}

#: Our own package: the PDK proxy, its annotations and exceptions.
OWN_PACKAGE = "kong_pdk"

#: Builtins that read files or the terminal, or run code this test cannot see.
BLOCKING_BUILTINS = frozenset({"open", "input", "exec", "eval", "compile", "__import__", "breakpoint"})


def blocking_reason(cls: type) -> str | None:
    """Why the handlers of plugin class ``cls`` may block a loop thread, or
    ``None`` when the source of its module shows they cannot."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not path:
        return f"the source of module {cls.__module__} is unknown"
    try:
        with tokenize.open(path) as f:
            source = f.read()
    except (OSError, SyntaxError) as e:
        return f"its source cannot be read ({e})"
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        return f"its source does not parse ({e.msg})"
    return _scan(tree)


def _pure_module(name: str) -> bool:
    return name in PURE_MODULES or name == OWN_PACKAGE or name.startswith(OWN_PACKAGE + ".")


def _scan(tree: ast.Module) -> str | None:
    """The first thing in ``tree`` that may block, described; ``None``: nothing."""
    # Local names bound to a module with pure names only: their attributes are checked.
    partial: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in PURE_NAMES:
                    partial[alias.asname or alias.name] = alias.name
                elif alias.name == "os.path":
                    partial[alias.asname or "os"] = "os"
                elif not _pure_module(alias.name):
                    return f"it imports {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                return f"it imports {'.' * node.level}{module} (a module of its own)"
            for alias in node.names:
                if _pure_module(module) or _pure_module(f"{module}.{alias.name}"):
                    continue
                pure = PURE_NAMES.get(module)
                if pure is None or alias.name not in pure:
                    return f"it imports {alias.name} from {module}"
    # Each node's parent: a module name is fine only as an attribute's base.
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BLOCKING_BUILTINS:
            return f"it calls {node.func.id}() (line {node.lineno})"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in partial:
            module = partial[node.value.id]
            if node.attr not in PURE_NAMES[module]:
                return f"it uses {module}.{node.attr} (line {node.lineno})"
        if isinstance(node, ast.Name) and node.id in partial:
            parent = parents.get(id(node))
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue
            return f"it passes the module {partial[node.id]} around (line {node.lineno})"
    return None
