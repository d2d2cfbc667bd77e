"""A gevent hub in a thread of its own, serving one plugin as ``-g`` does.

Under ``-g`` the command line runs every handler in a greenlet on the main
thread's hub (``kong_pdk.runners.GeventRunner``), and the main thread waits in
a way that lets the hub run. A test's main thread is busy playing Kong, so the
kit gives the server a thread whose only job is that hub: the server is built,
started, drained and shut down on it, as the command line does on its main
thread. The test process is not monkey-patched (that would change pytest
itself): a plugin's blocking I/O does not yield to other greenlets here, which
only matters for tests of concurrency; handlers still run in greenlets,
through the same runner as in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["GeventHost"]


class GeventHost:
    """Builds (``build()``) and serves a ``-g`` server on a dedicated hub thread."""

    def __init__(self, build: Callable[[], Any]) -> None:
        try:
            import gevent  # noqa: F401
        except ImportError:
            raise ImportError("model='gevent' needs gevent: pip install 'kong-pdk-native[gevent]'") from None
        self._build = build
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.server: Any = None
        self._drain = 1.0
        self._thread = threading.Thread(target=self._run, name="kong-pdk-kit-gevent", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        import gevent

        try:
            self.server = self._build()
            self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                gevent.sleep(0.02)  # the hub runs the greenlets meanwhile
            self.server.begin_drain()
            deadline = time.monotonic() + self._drain
            while self.server.busy() and time.monotonic() < deadline:
                gevent.sleep(0.01)
            self.server.shutdown(0.0)
        finally:
            self._done.set()

    def stop(self, drain: float = 1.0) -> None:
        """Drains for up to ``drain`` seconds and shuts the server down (on the hub thread)."""
        self._drain = drain
        self._stopping.set()
        self._done.wait(drain + 5.0)
