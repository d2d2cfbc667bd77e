"""Every server default is written once (src/defaults.rs). The core's
constructor names those constants in Rust; the command line reads them as
``_core.DEFAULTS``; these tests check the command line and the type stubs."""

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
    tree = ast.parse(STUB.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PluginServer")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    out: dict[str, object] = {}
    for arg, default in zip(init.args.kwonlyargs, init.args.kw_defaults):
        if default is not None:
            try:
                out[arg.arg] = ast.literal_eval(default)
            except ValueError:
                pass
    return out


def test_the_stubs_spell_the_table() -> None:
    stub = stub_defaults()
    for key, value in _core.DEFAULTS.items():
        if key == "drain_timeout":  # a command-line setting, not a constructor one
            continue
        assert key in stub, f"{key} has no default in _core.pyi"
        assert stub[key] == value, f"_core.pyi says {key}={stub[key]!r}, the core {value!r}"


def test_the_command_line_uses_the_table() -> None:
    args = build_parser("x").parse_args([])
    for key, dest in CLI_DEST.items():
        assert getattr(args, dest) == _core.DEFAULTS[key], key
