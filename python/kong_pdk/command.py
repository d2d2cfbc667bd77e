"""The ``kong-pdk`` command: ``run``, ``new`` and ``check``.

    kong-pdk new my-plugin                 # my-plugin.py, test_my_plugin.py, my-plugin.kong.conf
    kong-pdk check my-plugin.py            # warnings on stderr, Kong's plugin info on stdout
    kong-pdk run my-plugin.py -H 'host: example.com' http://example.com/

``new`` and ``check`` need only the base package. ``run`` drives the test kit,
which needs the testing extra; without it the command says so in one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "TESTING_EXTRA"]

TESTING_EXTRA = "pip install 'kong-pdk-native[testing]'"


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``kong-pdk`` parser, and its ``run`` subparser (parsed on its own, see ``main``)."""
    from kong_pdk._core import __version__
    from kong_pdk.testing.run import add_arguments

    top = argparse.ArgumentParser(
        prog="kong-pdk",
        description="Tools for Kong plugins written in Python (kong-pdk-native).",
        epilog="A plugin file serves itself: python PLUGIN.py -p KONG_PREFIX (see python PLUGIN.py --help).",
    )
    top.add_argument("--version", action="version", version=f"kong-pdk-native {__version__}")
    commands = top.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a plugin through one simulated request, printed like curl -i (needs the testing extra)",
        description="Run a plugin through one simulated request and print the response like curl -i. "
        f"Needs the testing extra: {TESTING_EXTRA}.",
    )
    add_arguments(run)
    new = commands.add_parser(
        "new",
        help="write a new plugin file, its test and a kong.conf snippet",
        description="Write NAME.py (a plugin), test_NAME.py (its tests, for pytest) and NAME.kong.conf.",
    )
    new.add_argument("name", help="the plugin's name, as Kong will know it (e.g. my-plugin)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write the files (default: .)")
    check = commands.add_parser(
        "check",
        help="warn about silent mistakes in a plugin file and print its info as Kong's query command gets it",
        description="Import PLUGIN.py without serving it, print warnings on stderr and the plugin info "
        "JSON (what --dump prints) on stdout.",
    )
    check.add_argument("plugin", type=Path, help="the plugin file")
    check.add_argument(
        "--name",
        default=None,
        help="plugin name (default: the name of the file's start_dedicated_server call, which --dump prints; "
        "else the file name without .py, as kong-python-pluginserver names it)",
    )
    check.add_argument(
        "--protocol",
        choices=("msgpack", "protobuf"),
        default=None,
        help="the wire to check for (default: the plugin's `protocol` attribute, else msgpack); with "
        "protobuf, the plugin's PDK calls that ProtoBuf:1 lacks are listed (a static scan of the file)",
    )
    return top, run


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`kong-pdk run ... | head`): nothing more to
        # say. Python would report the failed flush at exit; stdout goes to
        # /dev/null so that it cannot.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    from kong_pdk.install_check import warn_if_mixed

    warn_if_mixed()
    args_in = list(sys.argv[1:] if argv is None else argv)
    top, run_parser = build_parser()
    if not args_in:
        top.print_help(sys.stderr)
        return 2
    if args_in[0] == "run":
        # Options may follow the URL, as with curl: that takes argparse's
        # intermixed parsing, which a parser with subcommands cannot do.
        args = run_parser.parse_intermixed_args(args_in[1:])
        args.command = "run"
    else:
        args = top.parse_args(args_in)
    if args.command == "run":
        return _run(args)
    if args.command == "new":
        return _new(args)
    return _check(args)


def _run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("msgpack") is None:
        print(f"kong-pdk run: needs the testing extra (msgpack): {TESTING_EXTRA}", file=sys.stderr)
        return 2
    from kong_pdk.testing.run import run

    return run(args)


def _new(args: argparse.Namespace) -> int:
    from kong_pdk.scaffold import write_scaffold

    try:
        written = write_scaffold(args.name, args.dir)
    except (ValueError, OSError) as exc:
        print(f"kong-pdk new: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from kong_pdk.plugin_check import MISSING, plugin_mistakes
    from kong_pdk.plugin_file import import_plugin_file
    from kong_pdk.plugin_info import PHASES, plugin_info
    from kong_pdk.plugin_name import declared_name
    from kong_pdk.protobuf_scan import lacking_on_protobuf
    from kong_pdk.protocol import PROTOBUF, protocol_of, query_output

    path: Path = args.plugin
    if not path.is_file():
        print(f"kong-pdk check: no plugin file at {path}", file=sys.stderr)
        return 2
    try:
        module = import_plugin_file(path.resolve())
    except Exception as exc:  # the plugin's own import failed: say what, not a traceback of ours
        print(f"kong-pdk check: importing {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    plugin = getattr(module, "Plugin", None)
    if not isinstance(plugin, type):
        print(f"kong-pdk check: {path} defines no class Plugin", file=sys.stderr)
        return 1
    version = getattr(module, "version", MISSING)
    schema = getattr(module, "Schema", ())
    try:
        name = args.name or declared_name(path, module) or path.stem
        wire = protocol_of(plugin, args.protocol)
        info = plugin_info(name, plugin, None if version is MISSING else version,
                           getattr(module, "priority", 0), schema)
    except (TypeError, ValueError) as exc:
        print(f"kong-pdk check: {exc}", file=sys.stderr)
        return 1
    for mistake in plugin_mistakes(plugin, version, schema):
        print(f"kong-pdk check: warning: {mistake}", file=sys.stderr)
    try:
        lacking = lacking_on_protobuf(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):  # it imported, so this is unlikely
        lacking = []
    if wire == PROTOBUF:
        for call in lacking:
            print(f"kong-pdk check: warning: {path.name}:{call.line}: {call.name} is not available on "
                  "ProtoBuf:1 (it raises NotImplementedError there; docs/protobuf.md)", file=sys.stderr)
    sys.stdout.write(json.dumps(query_output([info], wire)) + "\n")
    if not info["Phases"]:
        print(f"kong-pdk check: Plugin defines none of the phases {', '.join(PHASES)}; "
              "the server refuses to start", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
