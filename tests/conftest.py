"""Fixtures that serve a plugin file as Kong would run it: a real process on a
real Unix socket, driven by the wire-level Kong emulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serving import EXAMPLES, PLUGINS, Served, wait_for_socket


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve("behaviours.py", "--event-timeout", "1")`` starts a server."""
    started: list[Served] = []

    def start(
        plugin: str | Path, *args: str, name: str | None = None, wait: bool = True, prefix: Path | None = None
    ) -> Served:
        path = Path(plugin)
        if not path.is_absolute():
            path = PLUGINS / path if (PLUGINS / path).exists() else EXAMPLES / path
        if prefix is None:
            prefix = tmp_path / f"prefix{len(started)}"
            prefix.mkdir(exist_ok=True)
        sock_name = f"{name or path.stem}.socket"
        log_path = prefix / f"server{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(path), "-p", str(prefix), "--socket-name", sock_name, "-vv", *args],
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        served = Served(proc, prefix, str(prefix / sock_name), log_path)
        started.append(served)
        if wait:
            wait_for_socket(served.socket, proc, log_path)
        return served

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        if s.proc.stdout:
            s.proc.stdout.close()
