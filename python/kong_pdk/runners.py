"""Python event loops that run handlers for the native core.

The core hands a runner a bridge (``attach``) whose ``fileno()`` becomes
readable when there is work; the runner calls ``bridge.drain()`` from its loop,
and the core calls back ``start``, ``new_token``, ``wait`` and ``resolve`` on the
loop's own thread (src/executor/bridge.rs). Two runners:

* ``AsyncioRunner``: ``async def`` phase handlers on one asyncio loop in its own
  thread (uvloop when installed); PDK calls return awaitables.
* ``GeventRunner`` (``-g``): every handler in a greenlet on the main thread's
  hub; PDK calls block only their greenlet.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["AsyncioRunner", "GeventRunner", "Bridge", "EventHandle"]


class Bridge(Protocol):
    """The core's side of a runner: a wake-up fd and the work queued behind it."""

    def fileno(self) -> int:
        """A descriptor that becomes readable when the core has queued work."""
        ...

    def drain(self) -> None:
        """Runs the queued work (on the runner's loop thread)."""
        ...


class EventHandle(Protocol):
    """One event the core handed a runner; ``can_respond``: Kong can still send the client a response."""

    can_respond: bool

    def finish(self) -> None:
        """Tells the core the handler has ended (however it ended)."""
        ...

    def report(self, exc: BaseException) -> str | None:
        """Hands the core the handler's exception; returns the message to log, or None."""
        ...


def _fail_closed(kong: Any, handle: EventHandle) -> None:
    """Like a Lua plugin that errors: a 500 where Kong can still respond."""
    if handle.can_respond:
        # Terminal: raises PluginExit once the call is sent.
        with contextlib.suppress(BaseException):
            kong.response.error(500)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional speed-up
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class AsyncioRunner:
    """Runs ``async def`` handlers concurrently on one event loop thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="kong-pdk-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def attach(self, bridge: Bridge) -> None:
        """Drains ``bridge`` from the loop whenever its fd is readable."""
        self.loop.call_soon_threadsafe(self.loop.add_reader, bridge.fileno(), bridge.drain)

    def new_token(self) -> asyncio.Future[Any]:
        """A future for one PDK call's reply."""
        return self.loop.create_future()

    def wait(self, token: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """The awaitable a PDK call returns to an ``async def`` handler."""
        return token

    def resolve(self, token: asyncio.Future[Any], value: object, error: BaseException | None) -> None:
        """Completes a PDK call's future with its value or its error."""
        if token.done():  # the awaiting task was cancelled
            return
        if error is not None:
            token.set_exception(error)
        else:
            token.set_result(value)

    def start(self, plugin: object, phase: str, kong: Any, handle: EventHandle) -> None:
        """Runs ``plugin.<phase>(kong)`` as a task; its ending is reported on ``handle``."""
        # The loop keeps only weak references to tasks: without ours, a task
        # waiting on Kong or on I/O could be garbage-collected mid-handler.
        task = self.loop.create_task(self._drive(getattr(plugin, phase), kong, handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, handler: Callable[[Any], Any], kong: Any, handle: EventHandle) -> None:
        try:
            result = handler(kong)
            if asyncio.iscoroutine(result):
                await result
        except BaseException as exc:  # every ending must reach Kong
            message = handle.report(exc)
            if message is not None:
                with contextlib.suppress(BaseException):
                    await kong.log.err(message)
                _fail_closed(kong, handle)
        finally:
            handle.finish()

    def close(self) -> None:
        """Stops the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)


class GeventRunner:
    """Runs every handler in a greenlet on the calling thread's gevent hub."""

    def __init__(self) -> None:
        import gevent
        import gevent.event

        self._gevent = gevent
        self._result = gevent.event.AsyncResult
        self._hub = gevent.get_hub()
        self._watcher: Any = None

    def attach(self, bridge: Bridge) -> None:
        """Drains ``bridge`` from the hub whenever its fd is readable."""
        self._watcher = self._hub.loop.io(bridge.fileno(), 1)
        self._watcher.start(bridge.drain)

    def new_token(self) -> Any:
        """A ``gevent.event.AsyncResult`` for one PDK call's reply."""
        return self._result()

    def wait(self, token: Any) -> Any:
        """Blocks the calling greenlet until the reply arrives; returns it or raises its error."""
        return token.get()

    def resolve(self, token: Any, value: object, error: BaseException | None) -> None:
        """Completes a PDK call's result with its value or its error."""
        if error is not None:
            token.set_exception(error)
        else:
            token.set(value)

    def start(self, plugin: object, phase: str, kong: Any, handle: EventHandle) -> None:
        """Runs ``plugin.<phase>(kong)`` in a new greenlet; its ending is reported on ``handle``."""
        self._gevent.spawn(self._drive, getattr(plugin, phase), kong, handle)

    @staticmethod
    def _drive(handler: Callable[[Any], Any], kong: Any, handle: EventHandle) -> None:
        try:
            handler(kong)
        except BaseException as exc:  # every ending must reach Kong
            message = handle.report(exc)
            if message is not None:
                with contextlib.suppress(BaseException):
                    kong.log.err(message)
                _fail_closed(kong, handle)
        finally:
            handle.finish()

    def close(self) -> None:
        """Stops watching the bridge."""
        if self._watcher is not None:
            self._watcher.stop()
