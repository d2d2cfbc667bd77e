"""The worker-process model (``-m``): real processes on real sockets.

The core keeps Kong's socket and relays each event to a worker process that
runs the plugin file in the thread model. These tests cover what only this
model has: where events run, workers dying and being replaced, the instances
living in each worker, no orphan processes, and no descriptors piling up in
the core.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kong_pdk.testing import KongEmulator, RpcError

from helpers import headers, status, wait_idle
from serving import Served

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    return serve("workers.py", "-m", "2", "--event-timeout", "2")


@pytest.fixture
def emu(served: Served) -> Iterator[KongEmulator]:
    with KongEmulator(served.socket) as e:
        yield e


def set_headers(result: Any) -> dict[str, str]:
    return {c.args[0]: c.args[1] for c in result.calls_to("kong.response.set_header")}


def worker_pids(emu: KongEmulator) -> list[int]:
    return [w["Pid"] for w in status(emu)["Workers"]]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_events_spread_across_workers_and_instances_live_there(served: Served, emu: KongEmulator) -> None:
    pids = worker_pids(emu)
    assert len(set(pids)) == 2 and served.proc.pid not in pids
    iid = emu.start_instance("workers", {})
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: emu.handle_event(iid, "access", answers={}), range(40)))
    seen = [set_headers(r) for r in results]
    assert {int(h["x-pid"]) for h in seen} == set(pids)
    # Each worker built the instance once, in itself; never per event.
    assert all(h["x-instance-pid"] == h["x-pid"] and h["x-created"] == "1" for h in seen)
    assert status(emu)["LostEvents"] == 0


def test_instances_are_started_and_closed_in_every_worker(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("workers", {"message": "a"})
    served.wait_log("worker 0] started instance")
    served.wait_log("worker 1] started instance")
    emu.close_instance(iid)
    served.wait_log("worker 0] closed instance")
    served.wait_log("worker 1] closed instance")
    with pytest.raises(RpcError) as err:
        emu.start_instance("workers", {"message": "refuse"})
    # The worker's message, with the prefix once (protocol.md §7.1 logs it).
    assert err.value.message.startswith("starting instance: ValueError: this config is refused")
    assert "starting instance: starting instance" not in err.value.message


def test_worker_death_ends_its_events_and_the_worker_is_replaced(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("workers", {})
    before = worker_pids(emu)
    released = threading.Event()

    def block(name: str) -> object:
        if name == "x-block":
            released.wait(30)
            return "go"
        return None

    sleepers = {"kong.request.get_header": headers({"x-case": "sleep"})}
    waiters = {"kong.request.get_header": lambda name: "wait-kong" if name == "x-case" else block(name)}
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(emu.handle_event, iid, "access", sleepers) for _ in range(4)]
        futures += [pool.submit(emu.handle_event, iid, "access", waiters) for _ in range(4)]
        # All 8 in flight: 4 computing in the workers, 4 parked waiting for Kong.
        def settled() -> bool:
            st = status(emu)
            return st["Events"] == {"Waiting": 4, "Running": 8} and [w["InFlight"] for w in st["Workers"]] == [4, 4]

        wait_until(settled, what="8 events in flight")
        time.sleep(0.3)  # the sleepers are now inside time.sleep in the workers
        assert settled()
        victim = status(emu)["Workers"][0]
        os.kill(victim["Pid"], signal.SIGKILL)
        served.wait_log(f"worker 0 (pid {victim['Pid']}) exited (killed by signal 9)")
        released.set()
        results = [f.result(30) for f in futures]
    # Kong got an answer for every event: the survivors ran to the end, the
    # lost ones ended like a handler that raised (error log, then 500).
    lost = [r for r in results if r.outcome != "ret"]
    assert len(lost) == 4  # worker 0's: 2 computing, 2 waiting for Kong
    for r in lost:
        assert (r.outcome, r.status) == ("error", 500)
        assert "worker process 0" in str(r.calls_to("kong.log.err")[0].args[0])
    st = wait_idle(emu)
    assert st["Events"] == {"Waiting": 0, "Running": 0}
    assert st["LostEvents"] == len(lost)
    # The worker is replaced, the instance re-created there, and new events work.
    wait_until(lambda: status(emu)["Workers"][0]["Up"], what="worker 0 back")
    after = status(emu)["Workers"]
    assert after[0]["Pid"] not in before and after[0]["Restarts"] == 1
    assert after[1]["Pid"] == before[1] and after[1]["Restarts"] == 0
    with ThreadPoolExecutor(4) as pool:
        fresh = [set_headers(r) for r in pool.map(lambda _: emu.handle_event(iid, "access", answers={}), range(20))]
    assert {int(h["x-pid"]) for h in fresh} == {after[0]["Pid"], after[1]["Pid"]}
    assert all(h["x-created"] == "1" for h in fresh)
    assert not alive(before[0])


def test_abandoned_event_ends_in_the_worker_too(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("workers", {})
    first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
    assert isinstance(first, dict)
    emu.call("plugin.Step", [{"EventId": first["EventId"], "Data": "abandon"}])
    # The core's reaper decides (2 s), then ends the worker's side at once,
    # well before the worker's own, later deadline.
    served.wait_log("abandoned: no Step from Kong")
    served.wait_log("abandoned by the core process", timeout=2)
    served.wait_log("handler stopped after Kong abandoned the event", timeout=2)
    assert wait_idle(emu)["Events"] == {"Waiting": 0, "Running": 0}


def test_core_descriptors_stay_flat_over_many_exit_events(served: Served, emu: KongEmulator) -> None:
    iid = emu.start_instance("workers", {})
    answers = {"kong.request.get_header": headers({"x-case": "exit"})}

    def burst(n: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda _: emu.handle_event(iid, "access", answers).outcome, range(n)))
        assert outcomes == ["exit"] * n

    burst(400)  # warms the pools: Kong's connections and the core's to the workers
    wait_idle(emu)
    core, workers = served.proc.pid, worker_pids(emu)
    counts = [fd_count(core)]
    worker_counts = [[fd_count(p) for p in workers]]
    for _ in range(3):
        burst(1500)
        wait_idle(emu)
        counts.append(fd_count(core))
        worker_counts.append([fd_count(p) for p in workers])
    # A descriptor per exit would add 4500. Pools may still grow a little
    # when a burst reaches a higher concurrency, but never past the 8
    # coroutines' worth of connections.
    assert max(counts) - counts[0] <= 8, counts
    for i in range(len(workers)):
        assert max(c[i] for c in worker_counts) - worker_counts[0][i] <= 8, worker_counts
    assert status(emu)["LostEvents"] == 0


def test_sigterm_stops_every_worker_and_leaves_no_orphan(served: Served, emu: KongEmulator) -> None:
    pids = worker_pids(emu)
    sockets = [f for f in os.listdir(served.prefix) if ".w" in f]
    assert len(sockets) == 2
    assert all(alive(p) for p in pids)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(20) == 0
    wait_until(lambda: not any(alive(p) for p in pids), timeout=5, what="workers gone")
    assert [f for f in os.listdir(served.prefix) if f.endswith(".socket") or ".w" in f] == []
    log = served.log()
    assert "worker 0] stopped" in log and "worker 1] stopped" in log
    assert "starting a new one" not in log


def test_workers_exit_when_the_core_is_killed(served: Served, emu: KongEmulator) -> None:
    # Kong cannot signal anyone when things crash: the workers notice that
    # their parent is gone, as the core notices Kong's (protocol.md §1.3).
    pids = worker_pids(emu)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    served.proc.kill()
    served.proc.wait(10)
    # Raises if a worker outlives its core.
    wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what="workers gone")


def test_a_worker_that_cannot_start_fails_the_start_clearly(tmp_path: Any, serve: Callable[..., Served]) -> None:
    plugin = tmp_path / "brokenworker.py"
    plugin.write_text(
        "import sys\n"
        "if '--worker-socket' in sys.argv:\n"
        "    raise ImportError('only the workers cannot import this')\n"
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def access(self, kong): pass\n"
        "from kong_pdk.cli import start_dedicated_server\n"
        "start_dedicated_server('brokenworker', Plugin)\n"
    )
    served = serve(plugin, "-m", "2", wait=False)
    assert served.proc.wait(30) == 1
    log = served.log()
    assert "only the workers cannot import this" in log
    assert "exited during startup" in log
    assert not os.path.exists(served.socket)
    # The worker that did start was stopped with the core.
    wait_until(lambda: not running_file(str(plugin)), timeout=5, what="no process left")


def running_file(path: str) -> list[int]:
    """Live processes whose command line runs ``path`` (a file unique to a test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(path) in argv and alive(int(entry)):
            found.append(int(entry))
    return found
