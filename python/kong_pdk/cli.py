"""Command lines of the plugin servers.

* A plugin file, ``python my_plugin.py [--dump] [-p PREFIX] ...``: the file ends
  with ``start_dedicated_server("name", Plugin, version, priority, Schema)``;
  Kong runs it as ``pluginserver_<name>_start_cmd`` (to serve) and with
  ``--dump`` / ``-dump`` as its query command (docs/protocol.md §1.1, §1.4).
* ``kong-python-pluginserver -d DIR [--dump-all-plugins] ...``
  (``start_server``): every plugin file of a folder on one socket
  (``kong_pdk.plugin_folder``).

Flags follow the official ``kong-pdk`` package. Logs go to stderr; stdout
carries nothing but the dump.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from kong_pdk import _core
from kong_pdk.logs import setup_logging
from kong_pdk.plugin_check import plugin_mistakes
from kong_pdk.plugin_info import plugin_info
from kong_pdk.protocol import protocol_of, query_output
from kong_pdk.serve import PluginDefinition, build_plugins_server, server_protocol

__all__ = [
    "start_dedicated_server",
    "start_server",
    "build_parser",
    "build_server_parser",
    "DEFAULT_PREFIX",
    "DEFAULT_SERVER_SOCKET",
]

DEFAULT_PREFIX = "/usr/local/kong"
#: The socket of ``kong-python-pluginserver``: the official package's name, which
#: kong.conf must give Kong (``pluginserver_<n>_socket``), see docs/migrating.md.
DEFAULT_SERVER_SOCKET = "python_pluginserver.sock"
# Every other default lives in the core (src/defaults.rs).
DEFAULTS: dict[str, float] = _core.DEFAULTS
log: logging.Logger = logging.getLogger("kong_pdk")
#: A replaced server leaves once Kong has sent nothing on its connections for
#: this many seconds (past the drain timeout).
REPLACED_QUIET = 0.5
#: The signals that drain and stop a server (and the --reload supervisor).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Taken as early as possible: if the parent dies before we look, we would
# compare against the new parent and never notice.
_PARENT_PID = os.getppid()


def build_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of the plugin server for the plugin ``name``."""
    p = argparse.ArgumentParser(
        prog=name,
        description=f"Kong plugin server for the Python plugin '{name}'.",
    )
    _add_server_flags(p, f"{name}.socket, Kong's default")
    p.add_argument(
        "--dump",
        "-dump",
        dest="dump",
        action="store_true",
        help="print the plugin info JSON for Kong's query command and exit",
    )
    return p


def build_server_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kong-python-pluginserver``: the plugins of a folder."""
    p = argparse.ArgumentParser(
        prog="kong-python-pluginserver",
        description="Kong plugin server for every Python plugin file of a folder, on one socket.",
    )
    p.add_argument(
        "-d",
        "--plugins-directory",
        "-plugins-directory",
        dest="plugins_directory",
        required=True,
        metavar="DIR",
        help="the folder of plugin files (each NAME.py is the plugin NAME)",
    )
    p.add_argument(
        "--dump-all-plugins",
        "-dump-all-plugins",
        dest="dump_all",
        action="store_true",
        help="print the info JSON of every plugin for Kong's query command (Kong 2.x - 3.8) and exit",
    )
    p.add_argument(
        "--dump-plugin-info",
        "-dump-plugin-info",
        dest="dump_one",
        default=None,
        metavar="NAME",
        help="print the info JSON of the plugin NAME alone (a Kong 3.9 query command) and exit",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="a plugin file that cannot be loaded is an error (exit status 1); "
        "by default it is logged and the other plugins are served and dumped",
    )
    _add_server_flags(p, f"{DEFAULT_SERVER_SOCKET}, the official package's")
    return p


def _add_server_flags(p: argparse.ArgumentParser, socket_default: str) -> None:
    """The flags every server has: socket, logs, style, execution model, limits."""
    p.add_argument(
        "-p",
        "--kong-prefix",
        "-kong-prefix",
        dest="kong_prefix",
        default=DEFAULT_PREFIX,
        help="Kong prefix; the socket is created there (default: %(default)s)",
    )
    p.add_argument(
        "--socket-name",
        default=None,
        help=f"socket file name inside the prefix (default: {socket_default})",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logs (-vv for debug)")
    p.add_argument("--version", action="version", version=f"kong_pdk {_core.__version__}")
    p.add_argument(
        "--listen-queue-size", type=int, default=DEFAULTS["listen_backlog"], help="listen backlog (default: %(default)s)"
    )
    p.add_argument(
        "--no-lua-style",
        dest="lua_style",
        action="store_false",
        help="PDK calls return the value and raise PDKException, instead of (value, err)",
    )
    p.add_argument(
        "--event-timeout",
        type=float,
        default=DEFAULTS["event_timeout"],
        help="seconds an event may wait for Kong's next step before it is abandoned",
    )
    p.add_argument(
        "--instance-ttl",
        type=float,
        default=DEFAULTS["instance_ttl"],
        help="seconds an idle plugin instance is kept (Kong never closes orphans)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULTS["drain_timeout"],
        help="on SIGTERM, seconds to let events in flight finish",
    )
    p.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULTS["max_frame"],
        help="largest MessagePack message accepted, in bytes",
    )
    p.add_argument(
        "--max-handler-threads",
        type=int,
        default=DEFAULTS["max_handler_threads"],
        help="most handlers running (or waiting on Kong) at once in thread mode; "
        "an event beyond them fails closed at once (default: %(default)s)",
    )
    p.add_argument(
        "--handler-timeout",
        type=float,
        default=DEFAULTS["handler_timeout"],
        metavar="S",
        help="a handler that runs S seconds without answering Kong fails its event closed "
        "(kong.log.err, then a 500 in rewrite/access); 0: off (default)",
    )
    p.add_argument(
        "--io-threads",
        type=int,
        default=DEFAULTS["async_threads"],
        help="threads serving the socket (default: %(default)s; handlers run on their own threads)",
    )
    p.add_argument(
        "-m",
        "--multiprocessing",
        dest="processes",
        nargs="?",
        const=0,
        type=int,
        default=None,
        metavar="N",
        help="run handlers in N worker processes (default N: one per CPU); for CPU-bound plugins",
    )
    p.add_argument(
        "-g", "--gevent", action="store_true", help="run handlers in gevent greenlets (pip install 'kong-pdk-native[gevent]')"
    )
    p.add_argument(
        "--model",
        choices=("auto", "threads", "greenlets"),
        default="auto",
        help="how plain def handlers run: on threads, or as greenlets on one loop thread (for plugins that never "
        "block); auto (default): greenlets when the plugin's code is known not to block, else threads "
        "(docs/execution-models.md)",
    )
    p.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the server when the plugin file or a module beside it changes "
        "(pip install 'kong-pdk-native[reload]')",
    )
    p.add_argument(
        "--protocol",
        choices=("msgpack", "protobuf"),
        default=None,
        help="the wire Kong speaks to the plugin: msgpack (Kong's default) or protobuf (ProtoBuf:1: less "
        "CPU in Kong, 74 of the PDK functions; docs/protobuf.md); default: the plugin's `protocol` attribute, "
        "else msgpack. Give it to Kong's query command too",
    )
    p.add_argument(
        "--take-over",
        action="store_true",
        help="replace a plugin server that still serves the socket path (by default the server refuses "
        "to start there, unless Kong started both: a Kong reload)",
    )
    # Internal: how the -m core starts each worker (serve on exactly this
    # socket, thread model, logs tagged "worker <index>").
    p.add_argument("--worker-socket", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def _fail(message: str) -> NoReturn:
    # Exit status 1, never 127: Kong stops respawning on 127 (docs/protocol.md §1.3).
    print(f"kong_pdk: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def start_dedicated_server(
    name: str,
    plugin: type,
    version: Any = None,
    priority: Any = 0,
    schema: Any = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Serves one plugin; the entry point of a plugin file (same signature as the
    official package's). Returns only through ``SystemExit``."""
    args = build_parser(name).parse_args(argv)
    try:
        wire = protocol_of(plugin, args.protocol)
    except ValueError as e:
        _fail(str(e))
    info = plugin_info(name, plugin, version, priority, schema)
    # Said once: not by workers (their main process has), not by the --reload
    # supervisor (its server will).
    if args.worker_socket is None and not (args.reload and not args.dump):
        for mistake in plugin_mistakes(plugin, version, schema):
            print(f"kong_pdk: warning: {mistake}", file=sys.stderr)
    if args.dump:
        _dump([info], wire)
    if args.reload and args.worker_socket is None:
        # The process Kong started becomes the supervisor of the real server.
        from kong_pdk.reload import supervise

        setup_logging(args.verbose, "reload")
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        socket_path = os.path.join(args.kong_prefix, args.socket_name or f"{name}.socket")
        supervise(main_file, list(sys.argv[1:] if argv is None else argv), socket_path, args.drain_timeout, _PARENT_PID)
    if args.gevent and args.worker_socket is None:
        _check_models(args)
        _enable_gevent(list(sys.argv[1:] if argv is None else argv))
    _serve(args, [PluginDefinition(name, plugin, version, priority, schema)], f"{name}.socket", None)


def start_server(argv: Sequence[str] | None = None) -> None:
    """``kong-python-pluginserver``: serves every plugin file of ``-d DIR`` on one
    socket (the official package's multi-plugin server). Returns only through
    ``SystemExit``.

    A plugin file that cannot be loaded costs only its own plugin, as with
    the official package: it is logged at error level with its traceback, and
    the others are served (or dumped by ``--dump-all-plugins``). With
    ``--strict`` it stops the server, or the dump, with status 1 (stdout then
    empty); so does a folder where no plugin loads.
    """
    from kong_pdk.plugin_folder import PluginLoadError, load_folder, load_plugin_file

    args = build_server_parser().parse_args(argv)
    worker = args.worker_socket is not None
    if args.reload:
        _fail("--reload serves one plugin file; run each plugin file of the folder with --reload instead")
    if args.gevent and not worker:
        _check_models(args)
        # Before the plugin files are imported: their own imports must get
        # gevent's blocking I/O (no re-exec needed, unlike a plugin file).
        _patch_for_gevent()
    directory = Path(args.plugins_directory)
    broken: list[PluginLoadError] = []
    try:
        if args.dump_one is not None:
            plugins = [load_plugin_file(_plugin_file(directory, args.dump_one))]
        else:
            loaded_folder = load_folder(directory)
            plugins, broken = loaded_folder.plugins, loaded_folder.broken
    except PluginLoadError as e:
        # Kong never reads stderr; this is for whoever runs the command by hand.
        print(e.details, file=sys.stderr, end="")
        _fail(str(e))
    if broken and not worker:
        # Kong's error log, at error level: the rest of the folder goes on.
        setup_logging(args.verbose)
        for failure in broken:
            log.error("%s%s\n%s", failure, "" if args.strict else "; serving the other plugins", failure.details.rstrip())
    if broken and (args.strict or not plugins):
        _fail(f"{len(broken)} plugin file(s) of {str(directory)!r} cannot be loaded"
              + (" (--strict)" if plugins else " and no other plugin file loaded"))
    if not worker:
        for loaded in plugins:
            for mistake in loaded.mistakes:
                print(f"kong_pdk: warning: {loaded.name}: {mistake}", file=sys.stderr)
    if args.dump_all or args.dump_one is not None:
        try:
            wire = server_protocol([loaded.definition for loaded in plugins], args.protocol)
        except ValueError as e:
            _fail(str(e))
        _dump([_info(loaded.definition) for loaded in plugins], wire)
    launcher = [sys.executable, "-m", "kong_pdk.cli", "-d", str(directory.resolve())]
    _serve(args, [loaded.definition for loaded in plugins], DEFAULT_SERVER_SOCKET, launcher)


def _plugin_file(directory: Path, name: str) -> Path:
    from kong_pdk.plugin_folder import PluginLoadError, plugin_files

    for path in plugin_files(directory):
        if path.stem == name:
            return path
    raise PluginLoadError(f"no plugin named {name!r} in {str(directory)!r} (no file {name}.py)")


def _info(plugin: PluginDefinition) -> dict[str, Any]:
    return plugin_info(plugin.name, plugin.cls, plugin.version, plugin.priority, plugin.schema)


def _dump(infos: list[dict[str, Any]], wire: str) -> NoReturn:
    """Writes the query command's JSON (docs/protocol.md §1.4; its object form
    for ProtoBuf:1, docs/protobuf.md) and exits."""
    try:
        text = json.dumps(query_output(infos, wire))
    except (TypeError, ValueError) as e:
        _fail(f"the plugin info cannot be written as JSON: {e}")
    sys.stdout.write(text)
    sys.stdout.flush()
    raise SystemExit(0)


def _check_models(args: argparse.Namespace) -> None:
    if args.processes is not None and args.gevent:
        _fail("-m (worker processes) and -g (gevent) cannot be combined")


def _serve(
    args: argparse.Namespace,
    plugins: list[PluginDefinition],
    default_socket: str,
    worker_command: list[str] | None,
) -> NoReturn:
    """Serves ``plugins`` until SIGTERM/SIGINT/SIGHUP or the parent's death, then drains."""
    worker = args.worker_socket is not None
    setup_logging(args.verbose, f"worker {args.worker_index}" if worker else None)
    processes = None if worker else args.processes
    _check_models(args)
    if processes is not None and processes < 0:
        _fail(f"-m needs a positive number of worker processes, not {processes}")
    prefix = args.kong_prefix
    if not os.path.isdir(prefix):
        _fail(f"Kong prefix {prefix!r} does not exist (set it with -p/--kong-prefix)")
    if not os.access(prefix, os.W_OK | os.X_OK):
        _fail(f"Kong prefix {prefix!r} is not writable by this user")
    socket_path = args.worker_socket if worker else os.path.join(prefix, args.socket_name or default_socket)
    try:
        server = build_plugins_server(
            plugins,
            socket_path,
            lua_style=args.lua_style,
            event_timeout=args.event_timeout,
            instance_ttl=args.instance_ttl,
            max_frame=args.max_message_size,
            listen_backlog=args.listen_queue_size,
            max_handler_threads=args.max_handler_threads,
            handler_timeout=args.handler_timeout,
            async_threads=args.io_threads,
            gevent=args.gevent and not worker,
            model=args.model,
            processes=processes,
            worker_command=worker_command,
            worker_args=["-v"] * args.verbose,
            take_over=args.take_over or _started_by_kong(),
            protocol=args.protocol,
        )
    except (TypeError, ValueError) as e:
        _fail(str(e))
    try:
        server.start()
    except (OSError, RuntimeError) as e:
        _fail(str(e))
    _wait_for_stop()
    server.begin_drain()
    # Waiting here, not inside the core, lets greenlets finish under -g.
    deadline = time.monotonic() + args.drain_timeout
    while server.busy() or server.lingering():
        if time.monotonic() >= deadline and not _kong_still_busy_here(server, deadline + args.event_timeout):
            break
        time.sleep(0.01)
    clean = server.shutdown(0.0)
    log.info("stopped%s", "" if clean else " (some events were abandoned)")
    raise SystemExit(0)


def _started_by_kong() -> bool:
    """Whether an nginx worker (Kong) is among this process's ancestors.

    A Kong reload starts the new worker's plugin server while the old
    worker's may still serve (it gets SIGTERM only when that worker exits,
    docs/protocol.md §1.3): that hand-over is Kong's own, so the new server
    takes the path. A server started by hand (no nginx above it) does not.
    """
    pid = os.getppid()
    for _ in range(32):
        if pid <= 1:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            # nginx titles its processes "nginx: worker process" and so on.
            if cmdline.startswith(b"nginx: "):
                return True
            pid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _kong_still_busy_here(server: _core.PluginServer, events_until: float) -> bool:
    """Whether a server replaced by a newer one (``--reload``, a Kong reload)
    stays past the drain timeout, as Kong is still in the middle of its work
    there and leaving would lose it.

    Kong still sends requests on its pooled connections to the old server,
    which passes them on: closing one Kong is writing to would lose that
    request, so the server leaves only once they have been quiet for
    ``REPLACED_QUIET`` seconds with nothing being passed on. Its own events
    in flight get ``--event-timeout`` more (their Steps may come late, or on a
    new connection through the newer server).
    """
    if not server.replaced():
        return False
    if server.forwards() > 0 or server.quiet_for() < REPLACED_QUIET:
        return True
    return server.busy() > 0 and time.monotonic() < events_until


def _patch_for_gevent() -> None:
    """Patches blocking I/O for ``-g`` before any plugin file is imported."""
    try:
        from gevent import monkey
    except ImportError:
        _fail("-g needs gevent: pip install 'kong-pdk-native[gevent]'")
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def _enable_gevent(argv: list[str]) -> None:
    """Patches blocking I/O so that it yields to other events (-g).

    Patching must come before the plugin's own imports (``requests``, ``ssl``
    …), which have run by now; so, unless that was done, the process becomes
    ``python -m kong_pdk.gevent_first <this plugin file> <argv>`` (exec: same
    pid, which is what Kong watches), which patches first and runs the plugin
    file again.
    """
    try:
        from gevent import monkey
    except ImportError:
        _fail("-g needs gevent: pip install 'kong-pdk-native[gevent]'")
    if monkey.is_module_patched("socket"):
        return  # gevent_first (or the plugin itself) patched already
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None or not os.path.isfile(main_file):
        monkey.patch_all()  # not started as a file: patching late is all we can do
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "kong_pdk.gevent_first", os.path.abspath(main_file), *argv])


def _wait_for_stop() -> None:
    """Blocks the main thread until SIGTERM/SIGINT/SIGHUP or the parent's death.

    Python keeps the main thread so that signal handlers run (docs/architecture.md, "Signals and shutdown").
    Kong cannot signal us when the nginx worker that spawned us crashes; we
    then get reparented, which `getppid` shows (docs/protocol.md §1.3).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        log.info("received %s, draining", signal.Signals(signum).name)
        stop.set()

    # SIGHUP too (a closed terminal, kill -HUP): by default it kills the
    # process at once, losing every event in flight and leaving the socket.
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    parent = _PARENT_PID
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("parent process %d is gone, stopping", parent)
            return


if __name__ == "__main__":
    # How the worker processes of ``kong-python-pluginserver -m`` start
    # (``python -m kong_pdk.cli -d DIR --worker-socket ...``).
    start_server()
