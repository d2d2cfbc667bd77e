"""One log format for the whole server process.

The Rust core logs through its own logger (``src/server/logging.rs``, ``init_logging``)
and the Python side through :mod:`logging`; both write to stderr, which Kong
merges into its error log line by line. Both use this layout, so that the lines
interleave as one log::

    [2026-11-29T15:18:24Z WARN  worker 1] message

(UTC timestamp to the second, the level padded to five characters, an optional
tag such as a worker's index).
"""

from __future__ import annotations

import logging
import sys
import time

from kong_pdk import _core

__all__ = ["setup_logging", "LineFormatter"]

# The core's level names, which Python spells differently.
_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "ERROR", "NOTSET": "TRACE"}


class LineFormatter(logging.Formatter):
    """Formats Python log records the way the core formats its own."""

    def __init__(self, tag: str | None = None) -> None:
        super().__init__()
        self._tag = f" {tag}" if tag else ""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return f"[{stamp} {level:<5}{self._tag}] {text}"


def setup_logging(verbosity: int, tag: str | None = None) -> None:
    """Sends Python's and the core's logs to stderr: warnings and errors, plus
    info with ``verbosity`` 1 and debug with 2; every line tagged with ``tag``."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(max(verbosity, 0), 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(tag))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _core.init_logging({logging.WARNING: "warn", logging.INFO: "info", logging.DEBUG: "debug"}[level], tag)
