"""Mistakes that used to pass silently are said: at --dump and at start (stderr), by
``kong-pdk check``, and in the test kit (``PluginWarning``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from kong_pdk.plugin_check import PluginWarning, plugin_mistakes
from kong_pdk.testing import PluginRunner
from kong_pdk.testing.kit.loader import load_plugin

ROOT = Path(__file__).resolve().parents[1]

MISTAKES = '''
import kong_pdk.pdk.kong as kong

Schema = {"message": {"type": "string"}}
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    def acces(self, kong):
        kong.response.set_header("x-never", "set")

    def log(self, kong):
        pass


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("mistakes", Plugin, priority=priority, schema=Schema)
'''


@pytest.fixture
def mistaken(tmp_path: Path) -> Path:
    path = tmp_path / "mistakes.py"
    path.write_text(MISTAKES)
    return path


def assert_said_all(text: str) -> None:
    assert "Plugin.acces looks like a misspelt phase" in text and "did you mean access?" in text
    assert "Schema is a dict" in text
    assert 'no version: Kong will show "0.0.0"' in text


def test_dump_warns_on_stderr_and_keeps_stdout_for_the_json(mistaken: Path) -> None:
    out = subprocess.run([sys.executable, str(mistaken), "--dump"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["Phases"] == ["log"]
    assert_said_all(out.stderr)
    assert len(out.stderr.splitlines()) == 3


def test_start_warns_on_stderr(mistaken: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(mistaken), "-p", str(tmp_path)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "mistakes.socket").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "mistakes.socket").exists()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert_said_all(err)


def test_check_says_them_too(mistaken: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "kong_pdk.command", "check", str(mistaken)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert_said_all(out.stderr)
    assert json.loads(out.stdout)[0]["Version"] == "0.0.0"


def test_the_kit_raises_them_as_warnings(mistaken: Path) -> None:
    with pytest.warns(PluginWarning) as caught:
        PluginRunner(load_plugin(mistaken))
    assert_said_all("\n".join(str(w.message) for w in caught))


def test_a_good_plugin_gets_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        PluginRunner(load_plugin(ROOT / "examples" / "py-hello.py"))


def test_helpers_that_are_not_near_a_phase_are_fine() -> None:
    class Plugin:
        def access(self, kong: object) -> None: ...

        def authenticate(self) -> None: ...

        def logger(self) -> None: ...

    assert plugin_mistakes(Plugin, "1.0", ()) == []
