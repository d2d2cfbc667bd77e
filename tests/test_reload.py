"""``--reload`` (python/kong_pdk/reload.py): the server is replaced in place when
the plugin's code changes, driven by the Kong emulator over the real socket.

Each test serves a plugin file written into its own folder, edits it, and checks
what Kong sees: the new behaviour without a Kong restart, a new ``serverPid``,
no event lost, a broken edit ignored, a clean stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# A dev dependency (Makefile): a missing one fails here, never skips.
import watchfiles  # noqa: F401

from kong_pdk.testing import KongEmulator, RpcError
from kong_pdk.testing.kong.event_result import EventResult

from serving import Served

PLUGIN = '''\
import kong_pdk.pdk.kong as kong
{imports}

Schema = ({{"message": {{"type": "string"}}}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    {async_}def access(self, kong: kong.kong) -> None:
        {await_}kong.request.get_header("x-first")
        {await_}kong.response.set_header("x-version", {value})


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("reloadme", Plugin, version, priority, Schema)
'''


def write_plugin(folder: Path, value: str, imports: str = "", is_async: bool = False) -> Path:
    """The plugin, with an ``async def`` handler (the looped model) if asked."""
    path = folder / "reloadme.py"
    # Written under another name and renamed, as many editors save.
    tmp = folder / ".reloadme.py.swp"
    prefixes = {"async_": "async ", "await_": "await "} if is_async else {"async_": "", "await_": ""}
    tmp.write_text(PLUGIN.format(imports=imports, value=value, **prefixes))
    os.replace(tmp, path)
    return path


def version_of(result: EventResult) -> object:
    calls = result.calls_to("kong.response.set_header")
    assert len(calls) == 1, result
    return calls[0].args[1]


def run_access(emu: KongEmulator) -> object:
    return version_of(emu.run_phase("reloadme", {}, "access"))


def wait_for_version(emu: KongEmulator, want: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        seen = run_access(emu)
        if seen == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"still {seen!r} after {timeout}s, want {want!r}")


def pids(emu: KongEmulator) -> list[object]:
    """The distinct serverPid values Kong was told, in order."""
    out: list[object] = []
    for note in emu.notifications:
        if note.label == "serverPid" and (not out or out[-1] != note.args):
            out.append(note.args)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "plugin"
    path.mkdir()
    return path


@pytest.fixture
def reloading(serve: Callable[..., Served], folder: Path) -> Iterator[Callable[[], Served]]:
    """Serves folder/reloadme.py with --reload; stops it with SIGTERM afterwards."""
    started: list[Served] = []

    def start() -> Served:
        served = serve(folder / "reloadme.py", "--reload", "--drain-timeout", "3")
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.stop(timeout=15)


def test_an_edit_is_served_without_a_kong_restart(folder: Path, reloading: Callable[[], Served]) -> None:
    write_plugin(folder, '"A"')
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        assert run_access(emu) == "A"
        write_plugin(folder, '"B"')
        wait_for_version(emu, "B")
        assert run_access(emu) == "B"
        seen = pids(emu)
        assert len(seen) == 2, seen
        assert served.proc.pid not in seen  # the supervisor serves nothing itself
        assert served.proc.poll() is None  # the process Kong started is still there
        served.wait_log("reloaded")


def test_no_event_is_lost_while_16_connections_loop_through_a_reload(
    folder: Path, reloading: Callable[[], Served]
) -> None:
    write_plugin(folder, '"A"')
    served = reloading()
    stop = threading.Event()
    results: list[list[object]] = [[] for _ in range(16)]
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        # One emulator per thread: its own pool, so its own connections.
        with KongEmulator(served.socket, timeout=10) as emu:
            try:
                while not stop.is_set() or not results[index] or results[index][-1] != "B":
                    results[index].append(run_access(emu))
                    if len(results[index]) > 20000:
                        raise AssertionError("never saw B")
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    write_plugin(folder, '"B"')
    served.wait_log("reloaded", timeout=30)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    for seen in results:
        # Every event answered with a version, A until the switch, then only B.
        assert seen and seen[0] == "A" and seen[-1] == "B"
        switch = seen.index("B")
        assert set(seen[:switch]) == {"A"} and set(seen[switch:]) == {"B"}
    # The old server passed Kong's new work on to the new one, finished its own
    # events, and exited once Kong had left its connections.
    log = served.wait_log("plugin server stopped", timeout=10)
    assert "handing new work over" in log
    assert "abandoning" not in log and "forwarding to the other plugin server failed" not in log


@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "asyncio"])
def test_connections_kong_keeps_busy_past_the_drain_timeout_lose_no_event(
    folder: Path, serve: Callable[..., Served], is_async: bool
) -> None:
    # Kong reuses its pooled connections to the old server for as long as it is
    # busy; the old server passes that work on and must not cut a connection in
    # the middle of an event when --drain-timeout expires.
    write_plugin(folder, '"A"', is_async=is_async)
    served = serve(folder / "reloadme.py", "--reload", "--drain-timeout", "0.5")
    stop = threading.Event()
    done = [0] * 16
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        with KongEmulator(served.socket, timeout=10) as emu:
            while not stop.is_set():
                try:
                    run_access(emu)
                    done[index] += 1
                except BaseException as e:
                    errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        write_plugin(folder, '"B"', is_async=is_async)
        served.wait_log("reloaded", timeout=30)
        time.sleep(2.0)  # four drain timeouts of continuous use
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, f"{len(errors)} of {sum(done) + len(errors)} events lost: {errors[:3]}"
    # Once Kong left them quiet, the old server closed them and stopped.
    log = served.wait_log("plugin server stopped", timeout=10)
    assert "abandoning" not in log
    served.stop(timeout=15)


@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "asyncio"])
def test_16_events_in_flight_that_kong_steps_slowly_outlive_the_drain_timeout(
    folder: Path, serve: Callable[..., Served], is_async: bool
) -> None:
    # Started on the old server; Kong takes 0.4 s between Steps (it is busy),
    # so each event ends well after --drain-timeout 0.5 s.
    write_plugin(folder, '"A"', is_async=is_async)
    served = serve(folder / "reloadme.py", "--reload", "--drain-timeout", "0.5")
    emus = [KongEmulator(served.socket, timeout=10) for _ in range(16)]
    try:
        events = []
        for emu in emus:
            iid = emu.start_instance("reloadme", {})
            events.append(emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}]))
        write_plugin(folder, '"B"', is_async=is_async)
        served.wait_log("reloaded", timeout=30)
        finished: list[object] = []
        errors: list[BaseException] = []

        def finish(emu: KongEmulator, event: object) -> None:
            assert isinstance(event, dict)
            try:
                for _ in range(2):
                    time.sleep(0.4)
                    reply = emu.call("plugin.Step", [{"EventId": event["EventId"], "Data": None}])
                finished.append(reply)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=finish, args=pair) for pair in zip(emus, events, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for emu in emus:
            emu.close()
    assert not errors, f"{len(errors)} of 16 events lost: {errors[:3]}"
    assert len(finished) == 16 and all(isinstance(r, dict) and r["Data"] == "ret" for r in finished)
    assert "abandoning" not in served.wait_log("plugin server stopped", timeout=10)


@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "asyncio"])
def test_a_step_of_an_old_event_on_a_new_connection_reaches_the_old_server(
    folder: Path, reloading: Callable[[], Served], is_async: bool
) -> None:
    write_plugin(folder, '"A"', is_async=is_async)
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        iid = emu.start_instance("reloadme", {})
        first = emu.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict) and first["Data"]["Method"] == "kong.request.get_header"
        write_plugin(folder, '"B"', is_async=is_async)
        served.wait_log("reloaded", timeout=30)
        # Kong's pool has no idle connection: the next Step opens a new one,
        # which reaches the new server.
        with emu.connection() as conn:
            step = conn.call("plugin.Step", [{"EventId": first["EventId"], "Data": None}])
            assert step == {
                "Data": {"Method": "kong.response.set_header", "Args": ["x-version", "A"]},
                "EventId": first["EventId"],
            }
        with emu.connection() as conn:
            done = conn.call("plugin.Step", [{"EventId": first["EventId"], "Data": None}])
            assert done == {"Data": "ret", "EventId": first["EventId"]}
        # Kong was told the old pid, then the new one; the old one's greeting
        # on the Step passed back is not passed on.
        assert len(pids(emu)) == 2, pids(emu)
    assert "abandoning" not in served.wait_log("plugin server stopped", timeout=10)
    # The old server removed the link the new one reached it through.
    assert not list(served.prefix.glob("*.old"))


def test_a_broken_edit_keeps_the_old_version_serving(folder: Path, reloading: Callable[[], Served]) -> None:
    write_plugin(folder, '"A"')
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        assert run_access(emu) == "A"
        write_plugin(folder, '"B"  (')  # a syntax error
        served.wait_log("reload skipped")
        assert "SyntaxError" in served.log()
        assert run_access(emu) == "A"
        write_plugin(folder, '"C"')
        wait_for_version(emu, "C")


def test_an_edited_helper_module_beside_the_plugin_reloads_it(
    folder: Path, reloading: Callable[[], Served]
) -> None:
    (folder / "reload_helper.py").write_text('VALUE = "A"\n')
    write_plugin(folder, "VALUE", imports="from reload_helper import VALUE")
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        assert run_access(emu) == "A"
        (folder / "reload_helper.py").write_text('VALUE = "B"\n')
        wait_for_version(emu, "B")


def test_sigterm_stops_the_supervisor_and_its_server(folder: Path, reloading: Callable[[], Served]) -> None:
    write_plugin(folder, '"A"')
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        assert run_access(emu) == "A"
        write_plugin(folder, '"B"')
        wait_for_version(emu, "B")
        server_pid = pids(emu)[-1]
    assert isinstance(server_pid, int)
    assert served.stop(timeout=15) == 0
    assert not os.path.exists(served.socket)
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    with pytest.raises(RpcError):
        KongEmulator(served.socket, timeout=2).call("plugin.GetStatus", [])
    # The server drained on the supervisor's SIGTERM; nothing had to be killed.
    assert "killing" not in served.log()


def test_sighup_stops_the_supervisor_and_its_server_gracefully(folder: Path, reloading: Callable[[], Served]) -> None:
    write_plugin(folder, '"A"')
    served = reloading()
    with KongEmulator(served.socket, timeout=10) as emu:
        assert run_access(emu) == "A"
    # Python's default for SIGHUP kills the supervisor, leaving its server behind.
    assert served.stop(signal.SIGHUP, timeout=15) == 0
    assert not os.path.exists(served.socket)
    assert "killing" not in served.log()


def test_without_watchfiles_the_error_names_the_extra(folder: Path, tmp_path: Path) -> None:
    plugin = write_plugin(folder, '"A"')
    # As if watchfiles were not installed: its import fails.
    script = (
        "import runpy, sys\n"
        "sys.modules['watchfiles'] = None\n"
        f"sys.argv = [{str(plugin)!r}, '--reload', '-p', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(plugin)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "kong_pdk: error: --reload needs watchfiles: pip install 'kong-pdk-native[reload]'"
    ]
    assert not (tmp_path / "reloadme.socket").exists()


def test_a_log_file_in_the_plugin_folder_triggers_nothing(folder: Path, serve: Callable[..., Served]) -> None:
    # The server's log (stderr, -vv) is written into the plugin's own folder.
    write_plugin(folder, '"A"')
    served = serve(folder / "reloadme.py", "--reload", "--drain-timeout", "3", prefix=folder)
    try:
        served.wait_log("watching 1 file(s) for changes")
        with open(served.log_path, "a") as log:  # one line, as Kong or the server would add
            log.write("a line written by someone else\n")
        # Before the filter: watchfiles reported that write and logged
        # "1 change detected" into the same file, which it then reported, about
        # three times a second. Wait for a few rounds of that.
        time.sleep(2.0)
        assert "change detected" not in served.log(), served.log()
        # An edit of the plugin still reloads it.
        write_plugin(folder, '"B"')
        with KongEmulator(served.socket, timeout=10) as emu:
            wait_for_version(emu, "B")
        assert served.log().count("change detected") == 1, served.log()
    finally:
        served.stop(timeout=15)
