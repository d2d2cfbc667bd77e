"""``kong-python-pluginserver -d DIR``: every plugin file of a folder on one socket.

Kong's side is the project's emulator over the real socket: it registers the
plugins from the query command's output as the given Kong version does
(docs/protocol.md §1.4: 3.8 and earlier all of them, 3.9 the first only), starts
instances by plugin name (StartInstance carries ``Name``, §4.1) and runs their
events, also interleaved on one connection.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kong_pdk.testing import KongEmulator
from kong_pdk.testing.kong.errors import RpcError

from suite_tools import suite_tool

# Installed by `make dev` with the package: missing is a failure there and in CI.
SCRIPT = Path(suite_tool("kong-python-pluginserver", "make dev"))

ALPHA = '''
import kong_pdk.pdk.kong as kong
from _shared import greeting_of

Schema = ({"greeting": {"type": "string"}},)
version = "1.0.0"
priority = 5


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        host, err = kong.request.get_header("host")
        kong.response.set_header("x-alpha", f"{greeting_of(self.config)} {host} err={err} {sorted(self.config)}")
'''

# Python style by class attribute: its own style, whatever alpha's.
BETA = '''
Schema = ({"tag": {"type": "string"}}, {"route_id": {"type": "string"}})
version = "2.0.0"
priority = 7


class Plugin:
    lua_style = False

    def __init__(self, config):
        self.config = config

    def rewrite(self, kong):
        host = kong.request.get_header("host")
        kong.service.request.set_header("x-beta", f"{self.config['tag']} {host} {sorted(self.config)}")

    def log(self, kong):
        kong.log.info("beta", self.config["tag"])
'''

GAMMA = '''
version = "3.0.0"


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        host, err = await kong.request.get_header("host")
        await kong.response.set_header("x-gamma", f"async {host}")
'''

SHARED = '''
def greeting_of(config):
    return config.get("greeting", "hello")
'''


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    socket: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def folder(tmp_path: Path, **files: str) -> Path:
    """A plugin folder: ``alpha=ALPHA`` writes ``alpha.py``; ``_shared.py`` is always there."""
    d = tmp_path / "plugins"
    d.mkdir(exist_ok=True)
    (d / "_shared.py").write_text(SHARED)
    for name, text in files.items():
        (d / f"{name}.py").write_text(text)
    return d


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(directory: Path, *args: str) -> Server:
        prefix = tmp_path / f"prefix{len(started)}"
        prefix.mkdir()
        log_path = prefix / "server.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [str(SCRIPT), "-d", str(directory), "-p", str(prefix), "-v", *args],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        # The official package's default socket name (docs/migrating.md).
        server = Server(proc, str(prefix / "python_pluginserver.sock"), log_path)
        started.append(server)
        deadline = time.monotonic() + 30
        while not os.path.exists(server.socket):
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no socket after 30 s:\n{server.log()}")
            time.sleep(0.02)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                assert server.proc.wait(20) == 0, server.log()
            finally:
                if server.proc.poll() is None:
                    server.proc.kill()


def header_calls(result: object, method: str) -> list[tuple[object, ...]]:
    return [call.args for call in result.calls_to(method)]  # type: ignore[attr-defined]


MODELS = {
    "threads": ({"alpha": ALPHA, "beta": BETA}, []),
    "asyncio+threads": ({"alpha": ALPHA, "beta": BETA, "gamma": GAMMA}, []),
    "gevent": ({"alpha": ALPHA, "beta": BETA}, ["-g"]),
    "processes": ({"alpha": ALPHA, "beta": BETA}, ["-m", "2"]),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_one_socket_serves_every_plugin_of_the_folder(
    model: str, tmp_path: Path, serve: Callable[..., Server]
) -> None:
    if model == "gevent":
        pytest.importorskip("gevent", reason="gevent is an optional extra")
    files, args = MODELS[model]
    directory = folder(tmp_path, **files)
    server = serve(directory, *args)
    dump = run("-d", str(directory), "--dump-all-plugins").stdout
    with KongEmulator(server.socket, kong_version="3.8", answers={"kong.request.get_header": "example.com"}) as kong:
        assert kong.register_plugins(dump).names == sorted(files)
        alpha = kong.run_phase("alpha", {"greeting": "hi"}, "access")
        assert alpha.outcome == "ret"
        assert header_calls(alpha, "kong.response.set_header") == [("x-alpha", "hi example.com err=None ['greeting']")]
        beta = kong.run_phase("beta", {"tag": "b1"}, "rewrite", plugin_id="beta-row")
        assert beta.outcome == "ret"
        assert header_calls(beta, "kong.service.request.set_header") == [("x-beta", "b1 example.com ['tag']")]
        assert kong.run_phase("beta", {"tag": "b1"}, "log", plugin_id="beta-row").outcome == "ret"
        if "gamma" in files:
            gamma = kong.run_phase("gamma", {}, "access")
            assert header_calls(gamma, "kong.response.set_header") == [("x-gamma", "async example.com")]
        status = kong.call("plugin.GetStatus", [])
        assert isinstance(status, dict)
        plugins = status["Plugins"]
        assert sorted(plugins) == sorted(files)
        assert [i["Config"] for i in plugins["alpha"]["Instances"]] == [{"greeting": "hi"}]
        assert [i["Config"]["tag"] for i in plugins["beta"]["Instances"]] == ["b1"]
        assert kong.call("plugin.GetPluginInfo", ["beta"]) == json.loads(dump)[1]


def test_events_of_two_plugins_interleave_on_one_connection(tmp_path: Path, serve: Callable[..., Server]) -> None:
    server = serve(folder(tmp_path, alpha=ALPHA, beta=BETA))
    with KongEmulator(server.socket, kong_version="3.8") as kong:
        # Kong adds route_id to both configs; only beta's schema declares it.
        a = kong.start_instance("alpha", {"greeting": "hey"}, route_id="r1")
        b = kong.start_instance("beta", {"tag": "t"}, route_id="r1")
        with kong.connection() as conn:
            first_a = conn.call("plugin.HandleEvent", [{"InstanceId": a, "EventName": "access"}])
            first_b = conn.call("plugin.HandleEvent", [{"InstanceId": b, "EventName": "rewrite"}])
            assert isinstance(first_a, dict) and isinstance(first_b, dict)
            assert first_a["Data"] == {"Method": "kong.request.get_header", "Args": ["host"]}
            assert first_b["Data"] == {"Method": "kong.request.get_header", "Args": ["host"]}
            # Answers in the other order, on the same connection.
            then_b = conn.call("plugin.Step", [{"EventId": first_b["EventId"], "Data": "b.example"}])
            then_a = conn.call("plugin.Step", [{"EventId": first_a["EventId"], "Data": "a.example"}])
            assert isinstance(then_a, dict) and isinstance(then_b, dict)
            assert then_a["Data"] == {
                "Method": "kong.response.set_header",
                "Args": ["x-alpha", "hey a.example err=None ['greeting']"],
            }
            assert then_b["Data"] == {
                "Method": "kong.service.request.set_header",
                "Args": ["x-beta", "t b.example ['route_id', 'tag']"],
            }
            for event in (then_a, then_b):
                done = conn.call("plugin.Step", [{"EventId": event["EventId"]}])
                assert done == {"Data": "ret", "EventId": event["EventId"]}
        # An instance runs only its own plugin's phases.
        with pytest.raises(RpcError, match="plugin alpha has no handler for phase 'rewrite'"):
            kong.handle_event(a, "rewrite")
        with pytest.raises(RpcError, match="no plugin named 'gamma' \\(this server serves 'alpha', 'beta'\\)"):
            kong.start_instance("gamma", {})


@pytest.mark.parametrize("kong_version", ["2.8", "3.8", "3.9"])
def test_dump_all_plugins_as_kongs_query_command_reads_it(tmp_path: Path, kong_version: str) -> None:
    directory = folder(tmp_path, beta=BETA, alpha=ALPHA)
    out = run("-d", str(directory), "--dump-all-plugins")
    assert out.returncode == 0, out.stderr
    infos = json.loads(out.stdout)
    assert [i["Name"] for i in infos] == ["alpha", "beta"]  # by file name; _shared.py is no plugin
    assert infos[1] == {
        "Name": "beta",
        "Phases": ["rewrite", "log"],
        "Priority": 7,
        "Version": "2.0.0",
        "Schema": {
            "name": "beta",
            "fields": [
                {"config": {"type": "record", "fields": [{"tag": {"type": "string"}}, {"route_id": {"type": "string"}}]}}
            ],
        },
    }
    with KongEmulator("/nonexistent.socket", kong_version=kong_version) as kong:
        registered = kong.register_plugins(out.stdout).names
    # Kong 3.9 keeps the first plugin of a query output only (docs/migrating.md).
    assert registered == (["alpha"] if kong_version == "3.9" else ["alpha", "beta"])


@pytest.mark.parametrize("flag", ["--dump-plugin-info", "-dump-plugin-info"])
def test_dump_plugin_info_prints_one_plugin_for_kong_3_9(tmp_path: Path, flag: str) -> None:
    directory = folder(tmp_path, alpha=ALPHA, beta=BETA)
    out = run("-d", str(directory), flag, "beta")
    assert out.returncode == 0, out.stderr
    with KongEmulator("/nonexistent.socket", kong_version="3.9") as kong:
        assert kong.register_plugins(out.stdout).names == ["beta"]
    missing = run("-d", str(directory), flag, "gamma")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no plugin named 'gamma'" in missing.stderr


def test_a_plugin_file_that_fails_to_import_costs_only_its_own_plugin(
    tmp_path: Path, serve: Callable[..., Server]
) -> None:
    # As with the official package: the broken file is logged, the rest is dumped and served.
    directory = folder(tmp_path, alpha=ALPHA, broken="import a_module_that_is_not_there\n")
    out = run("-d", str(directory), "--dump-all-plugins")
    assert out.returncode == 0, out.stderr
    assert [i["Name"] for i in json.loads(out.stdout)] == ["alpha"]
    error = next(line for line in out.stderr.splitlines() if "cannot load plugin file" in line)
    assert " ERROR" in error and "broken.py" in error and "serving the other plugins" in error
    assert "No module named 'a_module_that_is_not_there'" in error
    # The traceback starts at the plugin file's own line, not in the loader.
    assert 'broken.py", line 1, in <module>' in out.stderr and "plugin_folder.py" not in out.stderr
    # --strict: an error, and nothing on stdout for Kong to register.
    strict = run("-d", str(directory), "--dump-all-plugins", "--strict")
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr.strip().splitlines()[-1].startswith("kong_pdk: error: 1 plugin file(s) of ")
    assert run("-d", str(directory), "--dump-plugin-info", "alpha").returncode == 0
    assert run("-d", str(directory), "--dump-plugin-info", "broken").returncode == 1
    strict_serving = run("-d", str(directory), "-p", str(tmp_path), "--strict")
    assert strict_serving.returncode == 1 and "broken.py" in strict_serving.stderr
    assert not (tmp_path / "python_pluginserver.sock").exists()
    # Served without --strict: alpha answers, the log names the broken file at error level.
    server = serve(directory)
    with KongEmulator(server.socket, kong_version="3.8", answers={"kong.request.get_header": "h"}) as kong:
        result = kong.run_phase("alpha", {"greeting": "hi"}, "access")
        assert result.outcome == "ret"
    assert any(" ERROR" in line and "broken.py" in line for line in server.log().splitlines())


def test_a_file_without_a_plugin_class_is_logged_and_skipped(tmp_path: Path) -> None:
    directory = folder(tmp_path, alpha=ALPHA, helper="X = 1\n")
    out = run("-d", str(directory), "--dump-all-plugins")
    assert out.returncode == 0 and [i["Name"] for i in json.loads(out.stdout)] == ["alpha"]
    assert "helper.py defines no Plugin class" in out.stderr
    strict = run("-d", str(directory), "--dump-all-plugins", "--strict")
    assert strict.returncode == 1 and strict.stdout == ""


def test_a_folder_where_no_plugin_loads_is_an_error(tmp_path: Path) -> None:
    out = run("-d", str(folder(tmp_path, broken="raise RuntimeError('no')\n")), "--dump-all-plugins")
    assert out.returncode == 1 and out.stdout == ""
    assert "no other plugin file loaded" in out.stderr


def test_async_plugins_under_gevent_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("gevent", reason="gevent is an optional extra")
    out = run("-d", str(folder(tmp_path, gamma=GAMMA)), "-p", str(tmp_path), "-g")
    assert out.returncode == 1
    assert "plugin gamma cannot run under gevent" in out.stderr


def test_all_async_plugins_run_on_the_loop(tmp_path: Path, serve: Callable[..., Server]) -> None:
    # Every phase of every plugin async: the loop's thread serves the socket (looped model).
    server = serve(folder(tmp_path, gamma=GAMMA, delta=GAMMA.replace("x-gamma", "x-delta")))
    with KongEmulator(server.socket, kong_version="3.8", answers={"kong.request.get_header": "h"}) as kong:
        for name in ("gamma", "delta", "gamma"):
            result = kong.run_phase(name, {}, "access")
            assert header_calls(result, "kong.response.set_header") == [(f"x-{name}", "async h")]


def test_start_server_is_the_console_script(tmp_path: Path) -> None:
    from kong_pdk.cli import start_server

    with pytest.raises(SystemExit) as exit_info:
        start_server(["--version"])
    assert exit_info.value.code == 0
    out = run("-d", str(folder(tmp_path, alpha=ALPHA)), "--dump-all-plugins")
    assert [i["Name"] for i in json.loads(out.stdout)] == ["alpha"]


def test_a_folder_plugin_runs_in_the_test_kit(tmp_path: Path, kong: object) -> None:
    # Each file of the folder is an ordinary plugin file for the kit.
    directory = folder(tmp_path, alpha=ALPHA)
    sys.path.insert(0, str(directory))
    try:
        runner = kong.plugin(str(directory / "alpha.py"), {"greeting": "yo"})  # type: ignore[attr-defined]
        result = runner.http("GET", "http://example.com/", headers={"host": "example.com"})
    finally:
        sys.path.remove(str(directory))
    assert result.client_response.headers["x-alpha"] == "yo example.com err=None ['greeting']"
