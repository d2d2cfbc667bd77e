"""Every server default is written once (src/defaults.rs). The core's
constructor names those constants in Rust; the command line reads them as
``_core.DEFAULTS``; these tests check that the command line uses them and that
the type stubs do not write them again."""

from __future__ import annotations

import ast
from pathlib import Path

from kong_pdk import _core
from kong_pdk.cli import build_parser

STUB = Path(_core.__file__).with_name("_core.pyi")
if not STUB.exists():  # an installed wheel: the stub sits beside the package's sources
    STUB = Path(__file__).parent.parent / "python" / "kong_pdk" / "_core.pyi"

# Flag destinations of the command line, by constructor parameter.
CLI_DEST = {
    "event_timeout": "event_timeout",
    "instance_ttl": "instance_ttl",
    "drain_timeout": "drain_timeout",
    "max_frame": "max_message_size",
    "listen_backlog": "listen_queue_size",
    "async_threads": "io_threads",
    "max_handler_threads": "max_handler_threads",
    "handler_timeout": "handler_timeout",
}


def stub_defaults() -> dict[str, object]:
    """The keyword-only defaults of ``PluginServer.__new__`` in the stub, as written."""
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PluginServer")
    new = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__new__")
    return {
        arg.arg: ast.literal_eval(default)
        for arg, default in zip(new.args.kwonlyargs, new.args.kw_defaults, strict=True)
        if default is not None
    }


def test_the_stubs_defer_to_the_table() -> None:
    """Each default of the table is a constructor parameter whose stub default
    is ``...``: the number stands once, in src/defaults.rs (read as
    ``_core.DEFAULTS``), and mypy.stubtest (make lint) checks the rest of the
    signature against the built core."""
    stub = stub_defaults()
    for key in _core.DEFAULTS:
        if key == "drain_timeout":  # a command-line setting, not a constructor one
            continue
        assert key in stub, f"{key} is not a parameter of PluginServer in _core.pyi"
        assert stub[key] is Ellipsis, f"_core.pyi writes {key}={stub[key]!r}; the table is the one place for it"


def test_the_command_line_uses_the_table() -> None:
    args = build_parser("x").parse_args([])
    for key, dest in CLI_DEST.items():
        assert getattr(args, dest) == _core.DEFAULTS[key], key
