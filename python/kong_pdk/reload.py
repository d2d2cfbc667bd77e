"""``--reload``: a supervisor that restarts the plugin server when its code changes.

For development. With ``--reload`` the process Kong started does not serve: it
runs the real server as a child (the same command line without ``--reload``)
and watches the plugin file and the modules it imports from beside it (its
folder or below, not installed packages). On a change (debounced: an editor
writes several events) it replaces the server in place:

1. ``python -m kong_pdk.reload_check PLUGIN.py`` loads the new code as the
   query command would; a syntax error or a failing import is logged and the
   old server keeps serving.
2. A new server starts on the same socket path. The core binds under a staging
   name and renames it over the path (``src/server/socket_file.rs``, ``bind``): Kong's next
   connection reaches the new server while the old one still has its listening
   socket and its connections. A server that exits or does not take the path
   in time is logged and stopped; the old one keeps serving.
3. The old server gets SIGTERM. It lets its events in flight finish (their
   Steps still come on Kong's pooled connections), hands new events over to the
   new server (``no plugin instance``, then it closes that connection: Kong
   retries on a new one), and leaves the socket file alone (no longer its own).
   A Step of its events that Kong sends on a new connection reaches the new
   server, which passes it back (``src/handover.rs``); the old server stops
   once Kong leaves its connections quiet, never in the middle of a request.
4. The new server's ``serverPid`` notification makes Kong drop the instance ids
   it cached and start new instances, with the new code (docs/protocol.md §2).

To Kong the supervisor is the server: it stays the process Kong started, exits
on SIGTERM/SIGINT/SIGHUP after stopping its servers, stops when the Kong worker that
started it is gone, and exits when the server dies on its own (Kong then starts
it again, docs/protocol.md §1.3).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from kong_pdk.reload_check import local_modules

__all__ = ["supervise", "without_reload_flag"]

log: logging.Logger = logging.getLogger("kong_pdk.reload")

# How long a changed file must stay quiet before a reload (ms): an editor's save
# is often a write, a rename and a chmod in a row.
QUIET_MS = 150
# The watcher wakes up this often when nothing changes (ms).
IDLE_MS = 300
CHECK_TIMEOUT = 30.0
# A new server has this long to take the socket path (-m starts its workers first).
START_TIMEOUT = 30.0


def without_reload_flag(argv: Sequence[str]) -> list[str]:
    """The command line minus ``--reload`` (or an abbreviation argparse accepted)."""
    return [a for a in argv if not (len(a) > 4 and "--reload".startswith(a))]


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Supervisor:
    def __init__(self, plugin_file: str, child_argv: list[str], socket_path: str, drain_timeout: float) -> None:
        self.plugin_file = os.path.abspath(plugin_file)
        self.child_argv = child_argv
        self.socket_path = socket_path
        self.drain_timeout = drain_timeout
        self.current: subprocess.Popen[bytes] | None = None
        # Old servers draining after a reload, reaped as they exit.
        self.retiring: list[subprocess.Popen[bytes]] = []
        self.watched: set[str] = set(local_modules(self.plugin_file))
        # The watched files as last loaded (or tried, when that failed): a change
        # made before the watcher is set up is found by comparing with these,
        # and a change reported twice is recognised.
        self.seen: dict[str, tuple[int, int, int] | None] = {p: _signature(p) for p in self.watched}
        # After a failed check, any .py file in the watched folders may be the fix
        # (a new helper module that did not import).
        self.broken = False
        self.changes: queue.Queue[set[str]] = queue.Queue()
        self.stop = threading.Event()
        self.stop_watching = threading.Event()

    # -- servers ---------------------------------------------------------------

    def _spawn(self, take_over: bool = False) -> subprocess.Popen[bytes]:
        # The next server replaces the current one on its path: said
        # explicitly, as a server refuses to start on a live one otherwise.
        extra = ["--take-over"] if take_over else []
        return subprocess.Popen(
            [sys.executable, self.plugin_file, *self.child_argv, *extra],
            stdin=subprocess.DEVNULL,
        )

    def _wait_until_serving(self, proc: subprocess.Popen[bytes], old: tuple[int, int] | None) -> str | None:
        """None once ``proc`` owns the socket path; else why not."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            now = _file_id(self.socket_path)
            if now is not None and now != old:
                return None
            if proc.poll() is not None:
                return f"it exited with status {proc.returncode}"
            if self.stop.wait(0.01):
                return "the supervisor is stopping"
        return f"it did not serve {self.socket_path} within {START_TIMEOUT:.0f} s"

    def start_first(self) -> None:
        proc = self._spawn()
        # A socket file left by an earlier server is replaced as well.
        why = self._wait_until_serving(proc, _file_id(self.socket_path))
        if why is not None:
            _terminate([proc], self.drain_timeout)
            log.error("the plugin server did not start: %s", why)
            raise SystemExit(proc.returncode or 1)
        self.current = proc
        log.info("serving %s (server pid %d); watching %d file(s) for changes", self.plugin_file, proc.pid, len(self.watched))

    def reload(self, changed: set[str]) -> None:
        # The same change may be reported twice (the watcher's catching up).
        changed = {p for p in changed if p not in self.seen or _signature(p) != self.seen[p]}
        if not changed:
            return
        names = ", ".join(sorted(os.path.relpath(p, os.path.dirname(self.plugin_file)) for p in changed))
        log.info("changed: %s; checking the new code", names)
        for path in changed:
            _forget_bytecode(path)
        # Taken before loading: an edit made while the check runs is a new change.
        before = {p: _signature(p) for p in changed}
        problem, modules = _check(self.plugin_file)
        self.seen.update(before)
        if problem is not None:
            self.broken = True
            log.error("reload skipped, the old version keeps serving: %s", problem)
            return
        self.broken = False
        old = self.current
        new = self._spawn(take_over=True)
        why = self._wait_until_serving(new, _file_id(self.socket_path))
        if why is not None:
            _terminate([new], self.drain_timeout)
            log.error("reload failed, the old version keeps serving: the new server (pid %d) %s", new.pid, why)
            return
        self.current = new
        self.watched = set(modules)
        self.seen = {p: self.seen[p] if p in self.seen else _signature(p) for p in self.watched}
        self.stop_watching.set()  # the watcher restarts on the new set of folders
        if old is not None and old.poll() is None:
            old.send_signal(signal.SIGTERM)
            self.retiring.append(old)
        log.info("reloaded: server pid %d serves the new code (old pid %s drains)", new.pid, old.pid if old else "-")

    # -- watching --------------------------------------------------------------

    def relevant(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path in self.watched:
            return True
        return self.broken and path.endswith(".py")

    def watch(self) -> None:
        """The watcher thread: queues each debounced batch of relevant changes."""
        import watchfiles

        # It says "rust notify timeout, continuing" at each idle timeout.
        logging.getLogger("watchfiles").setLevel(logging.INFO)
        while not self.stop.is_set():
            self.stop_watching.clear()
            folders = sorted({os.path.dirname(p) for p in self.watched})
            caught_up = False
            try:
                for batch in watchfiles.watch(
                    *folders,
                    recursive=False,
                    step=QUIET_MS,
                    rust_timeout=IDLE_MS,
                    yield_on_timeout=True,
                    stop_event=self.stop_watching,
                    raise_interrupt=False,
                    # Only the plugin's own sources reach us (and watchfiles'
                    # "N changes detected" log line): a log file in the folder
                    # would otherwise report every line written to it, our
                    # own report of that change included, round and round.
                    watch_filter=lambda _change, path: self.relevant(path),
                ):
                    paths = {p for _, p in batch if self.relevant(p)}
                    if not caught_up and not batch:
                        # The first idle timeout: the watcher is surely set up by
                        # now; what changed before it was is found by comparing.
                        caught_up = True
                        paths |= {p for p, sig in self.seen.items() if _signature(p) != sig}
                    if paths:
                        self.changes.put(paths)
                    if self.stop.is_set():
                        return
            except Exception as e:  # a folder removed under us: try again shortly
                log.warning("watching %s failed: %s", ", ".join(folders), e)
                self.stop.wait(1.0)

    # -- the main thread -------------------------------------------------------

    def run(self, parent: int) -> NoReturn:
        def on_signal(signum: int, frame: types.FrameType | None) -> None:
            log.info("received %s, stopping the plugin server", signal.Signals(signum).name)
            self.stop.set()

        # SIGHUP stops gracefully as well: a closed terminal sends it to the
        # whole process group, so the servers drain on it anyway.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        self.start_first()
        watcher = threading.Thread(target=self.watch, name="kong-pdk-reload", daemon=True)
        watcher.start()
        status = 0
        while not self.stop.is_set():
            try:
                changed = self.changes.get(timeout=0.2)
            except queue.Empty:
                changed = set()
            while not self.changes.empty():  # one reload for everything queued
                changed |= self.changes.get_nowait()
            if changed and not self.stop.is_set():
                self.reload(changed)
            self.retiring = [p for p in self.retiring if p.poll() is None]
            if os.getppid() != parent:
                log.warning("parent process %d is gone, stopping", parent)
                break
            if self.current is not None and self.current.poll() is not None:
                status = 1
                log.error("the plugin server (pid %d) exited with status %d", self.current.pid, self.current.returncode)
                break
        self.stop.set()
        self.stop_watching.set()
        servers = [p for p in [self.current, *self.retiring] if p is not None]
        _terminate(servers, self.drain_timeout)
        log.info("stopped")
        raise SystemExit(status)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _forget_bytecode(path: str) -> None:
    """Removes the cached bytecode of a changed module.

    Python trusts a ``.pyc`` whose recorded mtime (in whole seconds) and size
    match the source: an edit within the same second that keeps the size (``"A"``
    to ``"B"``) would load the old code.
    """
    try:
        os.remove(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass


def _check(plugin_file: str) -> tuple[str | None, list[str]]:
    """(None, the local modules) when the file loads; else (what went wrong, [])."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kong_pdk.reload_check", plugin_file],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"loading {plugin_file} took more than {CHECK_TIMEOUT:.0f} s", []
    err = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        return f"loading {plugin_file} failed (status {done.returncode}):\n{err}", []
    try:
        modules = json.loads(done.stdout.decode())
    except ValueError:
        return f"loading {plugin_file} printed no module list:\n{err}", []
    return None, [str(m) for m in modules]


def _terminate(procs: list[subprocess.Popen[bytes]], drain_timeout: float) -> None:
    """SIGTERM, a drain's time to exit, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain_timeout + 5.0
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("server pid %d did not stop; killing it", p.pid)
            p.kill()
            p.wait()


def supervise(
    plugin_file: str | None, argv: Sequence[str], socket_path: str, drain_timeout: float, parent: int
) -> NoReturn:
    """Runs the plugin server under the reload supervisor; never returns."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        print("kong_pdk: error: --reload needs watchfiles: pip install 'kong-pdk-native[reload]'", file=sys.stderr)
        raise SystemExit(1) from None
    if plugin_file is None or not Path(plugin_file).is_file():
        print("kong_pdk: error: --reload needs the plugin to be run as a file (python my_plugin.py)", file=sys.stderr)
        raise SystemExit(1)
    Supervisor(plugin_file, without_reload_flag(argv), socket_path, drain_timeout).run(parent)
