"""The documented way from an empty venv to a passing plugin test (issue 18, point 1).

docs/getting-started.md tells a new user to ``pip install
'kong-pdk-native[testing]'``, ``kong-pdk new my-plugin`` and ``pytest``. Here
those commands run in a venv that holds exactly what the testing extra brings
(tests/linked_venv.py), with the venv's ``bin`` first on PATH as ``activate``
puts it: the extra must bring pytest, and the generated tests must pass.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from linked_venv import ROOT, linked_venv

GETTING_STARTED = (ROOT / "docs" / "getting-started.md").read_text()


@pytest.fixture(scope="module")
def testing_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python, _ = linked_venv(tmp_path_factory.mktemp("testing_extra"), extras=("testing",))
    return python.parent


def activated(bindir: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bindir.parent)
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_the_docs_give_these_commands() -> None:
    for command in ("pip install 'kong-pdk-native[testing]'", "kong-pdk new my-plugin", "pytest"):
        assert f"\n{command}" in GETTING_STARTED, command


def test_the_testing_extra_brings_pytest(testing_bin: Path) -> None:
    assert (testing_bin / "pytest").exists(), "pip install 'kong-pdk-native[testing]' installs no pytest"


def test_a_generated_plugin_passes_its_tests_with_the_documented_commands(testing_bin: Path, tmp_path: Path) -> None:
    assert (testing_bin / "pytest").exists()
    made = activated(testing_bin, "kong-pdk", "new", "my-plugin", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ran = activated(testing_bin, "pytest", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"\b3 passed\b", ran.stdout), ran.stdout


def test_the_hand_written_plugin_of_the_guide_passes_its_test(testing_bin: Path, tmp_path: Path) -> None:
    plugin, test = re.findall(r"```python\n(.*?)```", GETTING_STARTED, re.S)[:2]
    assert "# test_my_plugin.py" in test
    (tmp_path / "my_plugin.py").write_text(plugin)
    (tmp_path / "test_my_plugin.py").write_text(test)
    ran = activated(testing_bin, "pytest", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"\b1 passed\b", ran.stdout), ran.stdout
