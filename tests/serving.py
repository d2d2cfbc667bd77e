"""Serving a plugin file as Kong runs it: a real process on a real Unix socket."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

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


