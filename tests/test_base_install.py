"""A base install (no testing extra, so no msgpack) of kong-pdk-native, as a plugin author may have it.

A fresh venv (tests/linked_venv.py) gets our package, the entry points our
wheel declares, and pytest with its dependencies, and nothing else: no msgpack.

* pytest registers our plugin (pytest11) in every session; that must never
  break a run that does not use it, and the ``kong`` fixture fails in one line
  naming the extra;
* the ``kong-pdk`` command works there: help, ``new``, ``check``, and ``run``
  says in one line which extra it needs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from linked_venv import linked_venv


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python, wanted = linked_venv(tmp_path_factory.mktemp("base_install"), extras=(), also=("pytest",))
    assert "msgpack" not in wanted
    return python


def run_in(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_the_venv_is_a_base_install(base_python: Path) -> None:
    probe = run_in(base_python, "-c", "import sys, kong_pdk, pytest; print(sys.prefix != sys.base_prefix); import msgpack")
    assert probe.stdout.strip() == "True", probe.stderr
    assert "No module named 'msgpack'" in probe.stderr


def test_an_unrelated_pytest_run_passes(base_python: Path, tmp_path: Path) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_arithmetic():\n    assert 1 + 1 == 2\n")
    out = run_in(base_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
    # And our plugin was registered in that run: its fixture is listed.
    fixtures = run_in(base_python, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", str(tmp_path), cwd=tmp_path)
    assert "kong_pdk.testing.pytest_plugin" in fixtures.stdout or "kong --" in fixtures.stdout, fixtures.stdout


def test_the_kong_fixture_fails_in_one_line_naming_the_extra(base_python: Path, tmp_path: Path) -> None:
    (tmp_path / "test_kit.py").write_text("def test_uses_kit(kong):\n    pass\n")
    out = run_in(base_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 1
    assert "the kong fixture needs msgpack: pip install 'kong-pdk-native[testing]'" in out.stdout
    assert "Traceback" not in out.stdout


def test_the_command_works_without_the_extra(base_python: Path, tmp_path: Path) -> None:
    helped = run_in(base_python, "-m", "kong_pdk.command", "--help")
    assert helped.returncode == 0, helped.stderr
    assert all(f"    {c} " in helped.stdout for c in ("run", "new", "check"))
    assert run_in(base_python, "-m", "kong_pdk.command", "run", "--help").returncode == 0
    made = run_in(base_python, "-m", "kong_pdk.command", "new", "hello-there", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    checked = run_in(base_python, "-m", "kong_pdk.command", "check", str(tmp_path / "hello-there.py"))
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    ran = run_in(base_python, "-m", "kong_pdk.command", "run", str(tmp_path / "hello-there.py"))
    assert ran.returncode == 2
    assert ran.stderr == "kong-pdk run: needs the testing extra (msgpack): pip install 'kong-pdk-native[testing]'\n"
