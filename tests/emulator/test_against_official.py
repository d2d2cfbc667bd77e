"""The emulator against an independent real server: the official pure-Python kong-pdk.

Skipped unless ``KONG_PDK_OFFICIAL_PYTHON`` names a Python that has the official package,
e.g.::

    python3 -m venv /tmp/official && /tmp/official/bin/pip install kong-pdk msgpack
    KONG_PDK_OFFICIAL_PYTHON=/tmp/official/bin/python pytest tests/emulator

The official server has known bugs that are not ours to fix (``Version: null`` without a
module version, ``.sock`` by default, …); we pass ``--socket-name`` and a version.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kong_pdk.testing import KongEmulator, RpcError

# `make test` installs the official package in .venv-official; a plain pytest
# run in this tree finds it there too.
_MAKEFILE_VENV = Path(__file__).resolve().parents[2] / ".venv-official" / "bin" / "python"
OFFICIAL_PYTHON = os.environ.get("KONG_PDK_OFFICIAL_PYTHON", "") or (
    str(_MAKEFILE_VENV) if _MAKEFILE_VENV.exists() else ""
)
# Our PYTHONPATH (python/ of this tree) would shadow the official package with ours.
OFFICIAL_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _official_missing() -> str:
    if not OFFICIAL_PYTHON:
        return (
            "KONG_PDK_OFFICIAL_PYTHON is not set and .venv-official does not exist "
            "(make test installs the official kong-pdk there)"
        )
    probe = subprocess.run(
        [OFFICIAL_PYTHON, "-c", "import kong_pdk.cli, kong_pdk.listener, msgpack"],
        capture_output=True,
        text=True,
        check=False,
        env=OFFICIAL_ENV,
    )
    if probe.returncode != 0:
        return f"{OFFICIAL_PYTHON} has no official kong-pdk: {probe.stderr.strip()[-200:]}"
    return ""


_MISSING = _official_missing()
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=_MISSING or "official kong-pdk available")

# Our own tiny plugin in the shape the official package expects (module-level Schema,
# version, priority and a Plugin class; the dedicated-server entry point).
PLUGIN_SOURCE = '''
import kong_pdk.pdk.kong as kong

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin(object):
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        host, err = kong.request.get_header("host")
        greeting = self.config.get("message", "hello")
        kong.response.set_header("x-hello-from-python", "%s, %s" % (greeting, host))

    def rewrite(self, kong):
        kong.response.exit(403, "denied", {"x-why": "nope"})


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server
    start_dedicated_server("greeter", Plugin, version, priority, Schema)
'''


@dataclass
class OfficialServer:
    prefix: Path
    plugin: Path
    socket_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.prefix / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [OFFICIAL_PYTHON, str(self.plugin), "--kong-prefix", str(self.prefix), "--socket-name", "x.socket"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=OFFICIAL_ENV,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.socket_path))
                return
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
        raise RuntimeError(f"official server did not listen: {(self.prefix / 'server.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def official(sock_dir: Path) -> Iterator[OfficialServer]:
    plugin = sock_dir / "greeter.py"
    plugin.write_text(PLUGIN_SOURCE)
    server = OfficialServer(sock_dir, plugin, sock_dir / "x.socket")
    server.start()
    yield server
    server.stop()


HOST = {"kong.request.get_header": "example.com"}


def test_dump_prints_plugin_info(sock_dir: Path) -> None:
    plugin = sock_dir / "greeter.py"
    plugin.write_text(PLUGIN_SOURCE)
    out = subprocess.run(
        [OFFICIAL_PYTHON, str(plugin), "--dump"], capture_output=True, check=True, timeout=60, env=OFFICIAL_ENV
    )
    info = json.loads(out.stdout)
    assert info[0]["Name"] == "greeter" and sorted(info[0]["Phases"]) == ["access", "rewrite"]


def test_hello_event_through_the_official_server(official: OfficialServer) -> None:
    with KongEmulator(official.socket_path, timeout=10, answers=HOST) as emu:
        # A long message makes the Config and its values str16 on the wire (§3.2).
        message = "hi from a message longer than thirty-one bytes"
        result = emu.run_phase("greeter", {"message": message}, "access")
        assert result.outcome == "ret"
        assert result.methods == ["kong.request.get_header", "kong.response.set_header"]
        assert result.calls[0].args == ("host",)
        assert result.calls[1].args == ("x-hello-from-python", f"{message}, example.com")
        assert emu.discarded_bytes == 0


def test_terminal_exit_through_the_official_server(official: OfficialServer) -> None:
    with KongEmulator(official.socket_path, timeout=10) as emu:
        result = emu.run_phase("greeter", {}, "rewrite")
        assert result.outcome == "exit"
        assert (result.status, result.body, result.headers) == (403, "denied", {"x-why": "nope"})
        # The server must still serve other events afterwards.
        assert emu.run_phase("greeter", {}, "access", answers=HOST).outcome == "ret"


def test_unknown_instance_says_no_plugin_instance(official: OfficialServer) -> None:
    with KongEmulator(official.socket_path, timeout=10) as emu:
        with pytest.raises(RpcError) as info:
            emu.handle_event(123456, "access")
        assert info.value.is_no_plugin_instance


def test_recovery_after_a_server_restart(official: OfficialServer) -> None:
    with KongEmulator(official.socket_path, timeout=10, answers=HOST) as emu:
        assert emu.run_phase("greeter", {}, "access").outcome == "ret"
        official.stop()
        official.start()
        # The cached id is unknown to the new process: Kong restarts the instance.
        assert emu.run_phase("greeter", {}, "access").outcome == "ret"
        assert any("no plugin instance" in line.lower() for line in emu.log)


def test_64_concurrent_events_through_the_official_server(official: OfficialServer) -> None:
    with KongEmulator(official.socket_path, timeout=30) as emu:
        iid = emu.start_instance("greeter", {"message": "hey"})
        results: dict[int, Any] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(64)

        def drive(n: int) -> None:
            try:
                barrier.wait(timeout=10)
                results[n] = emu.handle_event(iid, "access", {"kong.request.get_header": f"h{n}"})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(n,)) for n in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert sorted(results) == list(range(64))
        for n, result in results.items():
            assert result.calls[1].args == ("x-hello-from-python", f"hey, h{n}")
        assert emu.discarded_bytes == 0
