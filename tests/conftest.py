"""Fixtures that serve a plugin file as Kong would run it: a real process on a
real Unix socket, driven by the wire-level Kong emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).parent
PLUGINS = HERE / "plugins"
EXAMPLES = HERE.parent / "examples"


@dataclass
class Served:
    """A plugin server process started for a test."""

    proc: subprocess.Popen[bytes]
    prefix: Path
    socket: str
    log_path: Path
    _log_offset: int = field(default=0)

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout}s; log:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def wait_for_socket(path: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.01)
    raise AssertionError(f"socket {path} did not appear; log:\n{log_path.read_text()}")


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
