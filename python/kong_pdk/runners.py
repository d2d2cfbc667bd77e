"""Python event loops that run handlers for the native core.

When every phase of a plugin runs on the loop (all ``async def``, or ``-g``),
the loop owns Kong's socket (src/models/looped/): the core calls ``serve(core)`` once,
and the runner watches one descriptor, ``core.poll_fd`` (an epoll set of the
listening socket and every connection, src/models/looped/poller.rs), calling
``core.ready()`` when it is readable, ``core.writable(conn)`` when a connection
with buffered replies is writable, ``core.tick()`` periodically and
``core.beat()`` every ``core.beat_period`` (what the core's stall watchdog
reads to see the loop turn; ``blocking_handler`` names what holds it). The core
calls back ``watch_writable``, ``unwatch_writable``, ``forget`` and
``pause_accepting`` to change what is watched, and ``start``, ``new_token`` and
``wait`` to run handlers and their PDK calls; it resumes a handler with Kong's
answer itself (an asyncio future's result, a gevent waiter's switch), all on
the loop's own thread: an event costs no thread switch.

A plugin that mixes sync and ``async def`` phases keeps its socket on the
core's I/O threads; the core then hands the asyncio runner a bridge
(``attach``) whose ``fileno()`` becomes readable when there is work, and the
runner calls ``bridge.drain()`` from its loop (src/models/mixed.rs).

* ``AsyncioRunner``: ``async def`` phase handlers on one asyncio loop in its own
  thread (uvloop when installed); PDK calls return awaitables.
* ``GeventRunner`` (``-g``): every handler in a greenlet on the main thread's
  hub; PDK calls block only their greenlet.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import os
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

__all__ = ["AsyncioRunner", "GeventRunner", "GreenletRunner", "Bridge", "LoopCore", "EventHandle", "blocking_handler"]


class Bridge(Protocol):
    """The core's side of a runner: a wake-up fd and the work queued behind it."""

    def fileno(self) -> int:
        """A descriptor that becomes readable when the core has queued work."""
        ...

    def drain(self) -> None:
        """Runs the queued work (on the runner's loop thread)."""
        ...


class LoopCore(Protocol):
    """The core's side of a loop that owns the socket (src/models/looped/mod.rs)."""

    @property
    def poll_fd(self) -> int:
        """The descriptor to watch for readability (the listener and every connection)."""
        ...

    @property
    def tick_period(self) -> float:
        """Seconds between two ``tick()`` calls."""
        ...

    def ready(self) -> None:
        """Accepts pending connections and serves what the connections have sent."""
        ...

    def resume_accepting(self) -> None:
        """Watches the listener again, after ``pause_accepting``."""
        ...

    def writable(self, conn: int) -> None:
        """Writes what connection ``conn`` has buffered."""
        ...

    def tick(self) -> None:
        """Fails closed events past --handler-timeout, abandons events Kong
        stopped answering; expires idle instances."""
        ...

    @property
    def beat_period(self) -> float:
        """Seconds between two ``beat()`` calls."""
        ...

    def beat(self) -> None:
        """The loop turned (called from a timer of the loop's own)."""
        ...

    def stop(self) -> None:
        """Abandons the events in flight, closes the connections and the listener."""
        ...


class EventHandle(Protocol):
    """One event the core handed a runner."""

    def finish(self) -> None:
        """Tells the core the handler has returned."""
        ...

    def fail(self, exc: BaseException) -> None:
        """Tells the core the handler raised ``exc``: the core logs it and, like a
        Lua plugin that errors, fails the event closed (``kong.log.err``, then a
        500 where Kong can still respond; src/events/fail_closed.rs)."""
        ...


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional speed-up
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _Serving:
    """What every runner that serves Kong's socket keeps: the looped core it
    was handed by ``serve``."""

    _core_or_none: LoopCore | None = None

    @property
    def _core(self) -> LoopCore:
        core = self._core_or_none
        if core is None:
            raise RuntimeError("the runner is not serving a socket")
        return core


class AsyncioRunner(_Serving):
    """Runs ``async def`` handlers concurrently on one event loop thread."""

    #: A PDK call's token is the future the handler awaits: the looped core
    #: returns it as is and completes it itself (no Python frame per call).
    awaitable_tokens = True

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        #: A future for one PDK call's reply: made by the Future class itself
        #: (C), not by a Python method, as there is one per PDK call.
        self.new_token: Callable[[], asyncio.Future[Any]] = functools.partial(asyncio.Future, loop=self.loop)
        self._ticker: asyncio.TimerHandle | None = None
        self._beater: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="kong-pdk-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def serve(self, core: LoopCore) -> None:
        """Serves Kong's socket from the loop (called once, from any thread)."""
        self._core_or_none = core
        self.loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        self.loop.add_reader(self._core.poll_fd, self._core.ready)
        self._tick()
        self._beat()

    def _tick(self) -> None:
        self._core.tick()
        self._ticker = self.loop.call_later(self._core.tick_period, self._tick)

    def _beat(self) -> None:
        self._core.beat()
        self._beater = self.loop.call_later(self._core.beat_period, self._beat)

    def watch_writable(self, fd: int, conn: int) -> None:
        """Flushes connection ``conn`` whenever ``fd`` is writable."""
        self.loop.add_writer(fd, self._core.writable, conn)

    def unwatch_writable(self, fd: int) -> None:
        """``fd``'s buffer is flushed: stop watching it for writability."""
        self.loop.remove_writer(fd)

    def forget(self, fd: int) -> None:
        """Stops watching ``fd`` (about to be closed)."""
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)

    def pause_accepting(self, seconds: float) -> None:
        """Accept failed (out of descriptors): the core stopped watching the
        listener; it resumes after ``seconds``."""
        self.loop.call_later(seconds, self._core.resume_accepting)

    def attach(self, bridge: Bridge) -> None:
        """Drains ``bridge`` from the loop whenever its fd is readable."""
        self.loop.call_soon_threadsafe(self.loop.add_reader, bridge.fileno(), bridge.drain)

    def wait(self, token: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """The awaitable a PDK call returns to an ``async def`` handler."""
        return token

    def resolve(self, token: asyncio.Future[Any], value: object, error: BaseException | None) -> None:
        """Completes a PDK call's future with its value or its error, for a
        plugin that mixes sync and ``async def`` phases (src/models/mixed.rs;
        the looped core resolves its futures itself, src/models/looped/mod.rs)."""
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
        # (_drive drops it when it ends: cheaper than a done callback, which
        # would cost the loop one more scheduled handle per event.)
        drive = self._drive(getattr(plugin, phase), kong, handle)
        if sys.version_info >= (3, 12):
            # Eager: the task's first step runs now, in this loop callback
            # (Kong's HandleEvent was just read), as the task it is
            # (current_task() is valid), instead of on the loop's next round.
            task = asyncio.Task(drive, loop=self.loop, eager_start=True)
        else:
            task = self.loop.create_task(drive)
        if not task.done():  # an eager task may have ended already
            self._tasks.add(task)

    async def _drive(self, handler: Callable[[Any], Any], kong: Any, handle: EventHandle) -> None:
        try:
            result = handler(kong)
            if asyncio.iscoroutine(result):
                await result
        except BaseException as exc:  # every ending must reach Kong
            handle.fail(exc)
        else:
            handle.finish()
        finally:
            task = asyncio.current_task(self.loop)
            if task is not None:
                self._tasks.discard(task)

    def close(self) -> None:
        """Stops serving (on the loop's thread), then stops the loop."""
        if self._core_or_none is not None and self._thread.is_alive():
            stopped = threading.Event()

            def stop() -> None:
                try:
                    for timer in (self._ticker, self._beater):
                        if timer is not None:
                            timer.cancel()
                    self._core.stop()
                finally:
                    stopped.set()

            self.loop.call_soon_threadsafe(stop)
            stopped.wait(5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _drive_greenlet(handler: Callable[[Any], Any], kong: Any, handle: EventHandle) -> None:
    """Runs a plain ``def`` handler in its greenlet (``GeventRunner``,
    ``GreenletRunner``) and reports how it ended on ``handle``."""
    try:
        handler(kong)
    except BaseException as exc:  # every ending must reach Kong
        handle.fail(exc)
    else:
        handle.finish()


class GeventRunner(_Serving):
    """Runs every handler in a greenlet on the calling thread's gevent hub.

    The hub serves Kong's socket too (``serve``): an I/O watcher on the
    core's epoll set (the listener and every connection) calls into the core
    from the hub greenlet.
    """

    #: A PDK call's token is a ``gevent.hub.Waiter``: the looped core resumes
    #: it itself (a switch from the hub, src/models/looped/mod.rs: no Python frame
    #: per call).
    waiter_tokens = True

    def __init__(self) -> None:
        import gevent
        import gevent.hub

        self._gevent = gevent
        self._new_greenlet = gevent.Greenlet
        #: The current greenlet: the core resumes a waiter directly when it
        #: runs on the hub, and through ``run_callback`` otherwise.
        self.getcurrent: Callable[[], Any] = gevent.getcurrent
        #: The hub.
        self.hub = gevent.get_hub()
        #: ``run_callback(fn, arg)`` runs ``fn(arg)`` on the hub's next round.
        self.run_callback: Callable[..., Any] = self.hub.loop.run_callback
        #: A ``gevent.hub.Waiter`` per PDK call; the calling greenlet blocks
        #: in its ``get`` until the core switches back with the reply. Both
        #: are the Waiter's own (compiled) functions: no Python frame per call.
        self.new_token: Callable[[], Any] = gevent.hub.Waiter
        self.wait: Callable[[Any], Any] = gevent.hub.Waiter.get
        self._ticker: Any = None
        self._beater: Any = None
        # fd -> its read watcher and write watcher (None: not watched).
        self._watchers: dict[int, list[Any]] = {}

    def serve(self, core: LoopCore) -> None:
        """Serves Kong's socket from the hub (called on the hub's thread)."""
        self._core_or_none = core
        self._watch(core.poll_fd, 0, core.ready)
        self._ticker = self.hub.loop.timer(core.tick_period, core.tick_period)
        self._ticker.start(core.tick)
        self._beater = self.hub.loop.timer(0.0, core.beat_period)
        self._beater.start(core.beat)

    def _watch(self, fd: int, which: int, callback: Callable[..., None], *args: object) -> None:
        slots = self._watchers.setdefault(fd, [None, None])
        if slots[which] is None:
            watcher = self.hub.loop.io(fd, 1 if which == 0 else 2)
            watcher.start(callback, *args)
            slots[which] = watcher

    def _unwatch(self, fd: int, which: int) -> None:
        slots = self._watchers.get(fd)
        if slots is not None and slots[which] is not None:
            slots[which].stop()
            slots[which].close()
            slots[which] = None

    def watch_writable(self, fd: int, conn: int) -> None:
        """Flushes connection ``conn`` whenever ``fd`` is writable."""
        self._watch(fd, 1, self._core.writable, conn)

    def unwatch_writable(self, fd: int) -> None:
        """``fd``'s buffer is flushed: stop watching it for writability."""
        self._unwatch(fd, 1)

    def forget(self, fd: int) -> None:
        """Stops watching ``fd`` (about to be closed)."""
        self._unwatch(fd, 0)
        self._unwatch(fd, 1)
        self._watchers.pop(fd, None)

    def pause_accepting(self, seconds: float) -> None:
        """Accept failed (out of descriptors): the core stopped watching the
        listener; it resumes after ``seconds``."""
        self._gevent.spawn_later(seconds, self._core.resume_accepting)

    def start(self, plugin: object, phase: str, kong: Any, handle: EventHandle) -> None:
        """Runs ``plugin.<phase>(kong)`` in a new greenlet; its ending is reported on ``handle``.

        The greenlet (a ``gevent.Greenlet``, whose parent is the hub) is
        entered at once from the hub, where Kong's HandleEvent was just read,
        as ``Greenlet.start`` would have the hub do on its next round: the
        handler runs up to its first PDK call before the hub goes on, and no
        loop callback is scheduled for it.
        """
        worker = self._new_greenlet(_drive_greenlet, getattr(plugin, phase), kong, handle)
        if self.getcurrent() is self.hub:
            worker.switch()
        else:
            worker.start()


    def close(self) -> None:
        """Stops serving: abandons the events in flight, closes the connections."""
        for timer in (self._ticker, self._beater):
            if timer is not None:
                timer.stop()
        self._ticker = self._beater = None
        if self._core_or_none is not None:
            self._core.stop()


class GreenletRunner(_Serving):
    """Runs plain ``def`` handlers in greenlets on a loop thread of its own.

    For plugins whose handlers do not block (``kong_pdk.blocking``, or
    ``--model greenlets``): the thread's own greenlet is the hub; it waits in
    ``poll`` (without the GIL) on the core's epoll set, a wake-up pipe and the
    descriptors being flushed, and each handler runs in a greenlet that it
    enters at once when Kong's HandleEvent is read. A PDK call switches
    from the handler's greenlet back to the hub, and the core switches to it
    again with Kong's answer. Unlike ``-g``, nothing
    is monkey-patched: a handler that blocks holds every other event, which is
    why this runner is chosen only for plugins known not to block, and the
    core's stall watchdog names any handler that does.
    """

    #: A PDK call's token is the calling greenlet: the core gets it with
    #: ``new_token`` (greenlet's ``getcurrent``), waits with ``wait`` (the
    #: hub's ``switch``) and resumes it with its ``switch`` or ``throw``; all
    #: greenlet's own compiled functions, no Python frame per call.
    greenlet_tokens = True

    def __init__(self) -> None:
        import greenlet

        self._greenlet = greenlet.greenlet
        self.getcurrent: Callable[[], Any] = greenlet.getcurrent
        #: The loop thread's own greenlet, set when the thread starts.
        self.hub: Any = None
        self.new_token: Callable[[], Any] = greenlet.getcurrent
        #: The hub's ``switch``, set when the thread starts.
        self.wait: Callable[[], Any] = lambda: None
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll.register(self._wake_r, select.POLLIN)
        #: fd -> conn, for the descriptors watched for writability.
        self._writable: dict[int, int] = {}
        #: Work for the hub's next round: (fn, arg); from any thread.
        self._callbacks: collections.deque[tuple[Callable[[Any], object], Any]] = collections.deque()
        #: (deadline, sequence, fn) timers, soonest first.
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._timer_seq = 0
        self._stopping = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kong-pdk-greenlets", daemon=True)
        self._thread.start()
        self._started.wait()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    def run_callback(self, fn: Callable[[Any], object], arg: object) -> None:
        """Runs ``fn(arg)`` on the hub's next round (from any thread)."""
        self._callbacks.append((fn, arg))
        if self.getcurrent() is not self.hub:
            self._wake()

    def _call_later(self, seconds: float, fn: Callable[[], object]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (time.monotonic() + seconds, self._timer_seq, fn))

    def serve(self, core: LoopCore) -> None:
        """Serves Kong's socket from the loop thread (called once, from any thread)."""
        self._core_or_none = core
        self.run_callback(self._begin, core)

    def _begin(self, core: LoopCore) -> None:
        self._poll.register(core.poll_fd, select.POLLIN)
        self._tick()
        self._beat()

    def _tick(self) -> None:
        self._core.tick()
        self._call_later(self._core.tick_period, self._tick)

    def _beat(self) -> None:
        self._core.beat()
        self._call_later(self._core.beat_period, self._beat)

    def watch_writable(self, fd: int, conn: int) -> None:
        """Flushes connection ``conn`` whenever ``fd`` is writable."""
        self._writable[fd] = conn
        self._poll.register(fd, select.POLLOUT)

    def unwatch_writable(self, fd: int) -> None:
        """``fd``'s buffer is flushed: stop watching it for writability."""
        if self._writable.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def forget(self, fd: int) -> None:
        """Stops watching ``fd`` (about to be closed)."""
        self.unwatch_writable(fd)

    def pause_accepting(self, seconds: float) -> None:
        """Accept failed (out of descriptors): the core stopped watching the
        listener; it resumes after ``seconds``."""
        self._call_later(seconds, self._core.resume_accepting)

    def start(self, plugin: object, phase: str, kong: Any, handle: EventHandle) -> None:
        """Runs ``plugin.<phase>(kong)`` in a new greenlet, entered at once
        when called on the hub; its ending is reported on ``handle``."""
        worker = self._greenlet(_drive_greenlet, parent=self.hub)
        if self.getcurrent() is self.hub:
            worker.switch(getattr(plugin, phase), kong, handle)
        else:
            self.run_callback(lambda args: worker.switch(*args), (getattr(plugin, phase), kong, handle))


    def _run(self) -> None:
        self.hub = self.getcurrent()
        self.wait = self.hub.switch
        self._started.set()
        poll = self._poll.poll
        callbacks = self._callbacks
        timers = self._timers
        while not self._stopping:
            timeout: float | None = None
            if callbacks:
                timeout = 0
            elif timers:
                timeout = max(0.0, (timers[0][0] - time.monotonic()) * 1000.0)
            for fd, _ in poll(timeout):
                core = self._core_or_none
                if core is not None and fd == core.poll_fd:
                    core.ready()
                elif fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 512)
                    except BlockingIOError:
                        pass
                else:
                    conn = self._writable.get(fd)
                    if conn is not None and core is not None:
                        core.writable(conn)
                if self._stopping:
                    break
            while callbacks:
                fn, arg = callbacks.popleft()
                self._guarded(fn, arg)
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                _, _, due = heapq.heappop(timers)
                self._guarded(_call, due)
        core = self._core_or_none
        if core is not None:
            core.stop()

    @staticmethod
    def _guarded(fn: Callable[[Any], object], arg: object) -> None:
        try:
            fn(arg)
        except Exception:  # the loop must go on serving
            traceback.print_exc()

    def close(self) -> None:
        """Stops serving: abandons the events in flight, closes the connections."""
        self._stopping = True
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)


def _call(fn: Callable[[], object]) -> None:
    fn()


#: The frames that run a handler for a looped core: the event's handle is
#: their local ``handle``.
_DRIVERS = frozenset({AsyncioRunner._drive.__code__, _drive_greenlet.__code__})

#: Frames shown of a stall outside any handler.
_STACK_LIMIT = 20


def blocking_handler(thread_id: int) -> tuple[EventHandle | None, str, str]:
    """What thread ``thread_id`` (a loop that stopped turning) runs now: the
    handle of the event whose handler it is in (None: no handler), where it
    is (``file:line in function``), and the stack from the handler's driver
    inward (most recent call last).

    Called by the core's stall watchdog (src/models/looped/watchdog.rs) from its own
    thread, with the GIL: the loop's thread is blocked meanwhile, in
    ``time.sleep`` (which released the GIL) or in code that hands it over
    at the switch interval.
    """
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None, "(the loop's thread is gone)", ""
    handle: EventHandle | None = None
    depth = 0  # frames from the blocking one out to the handler's driver
    walk: FrameType | None = frame
    while walk is not None:
        depth += 1
        if walk.f_code in _DRIVERS:
            handle = walk.f_locals.get("handle")
            break
        walk = walk.f_back
    # From the driver inward (the loop's own frames say nothing here).
    stack = traceback.extract_stack(frame, limit=depth if walk is not None else _STACK_LIMIT)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    return handle, where, "".join(stack.format()).rstrip("\n")
