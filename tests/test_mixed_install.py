"""The official kong-pdk installed over ours is reported (issue 18, point 3).

pip installing the official package after kong-pdk-native overwrites our
``kong_pdk/__init__.py``, ``cli.py`` and the PDK stubs with its own, so plugins
run the official server, and our ``import kong_pdk`` check never runs. What
still runs of ours: the ``kong-pdk`` command, and ``kong_pdk/pdk/kong/log/``,
which the official ``kong_pdk.pdk.kong`` imports (a package wins over its
``log.py``) on ``--dump``, at start, and in ``kong-python-pluginserver``.

The mixed tree is made as pip makes it: our package's files, then the official
package's files copied over them (and its dist-info beside), in a folder put
first on the path of a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_MAKEFILE_VENV = ROOT / ".venv-official" / "bin" / "python"
OFFICIAL_PYTHON = os.environ.get("KONG_PDK_OFFICIAL_PYTHON", "") or (
    str(_MAKEFILE_VENV) if _MAKEFILE_VENV.exists() else ""
)
pytestmark = pytest.mark.skipif(
    not OFFICIAL_PYTHON, reason="no official kong-pdk (make test installs it in .venv-official)"
)
FIX = "pip uninstall -y kong-pdk kong-pdk-native && pip install kong-pdk-native"


def _official_site() -> Path:
    out = subprocess.run(
        [OFFICIAL_PYTHON, "-c", "import kong_pdk.listener, os; print(os.path.dirname(os.path.dirname(kong_pdk.__file__)))"],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def mixed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("mixed") / "site-packages"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "python" / "kong_pdk", site / "kong_pdk", ignore=ignore)
    official = _official_site()
    shutil.copytree(official / "kong_pdk", site / "kong_pdk", ignore=ignore, dirs_exist_ok=True)
    for info in official.glob("kong_pdk-*.dist-info"):
        shutil.copytree(info, site / info.name)
    return site


def run_with(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, cwd=site)


def test_the_official_package_really_replaced_ours(mixed_site: Path) -> None:
    probe = run_with(mixed_site, "-c", "import kong_pdk.cli as c; print(hasattr(c, 'build_server_parser'))")
    assert probe.stdout.strip() == "False", probe.stderr  # the official cli.py


def test_dump_of_a_plugin_file_reports_the_mix(mixed_site: Path) -> None:
    out = run_with(mixed_site, str(ROOT / "examples" / "py-hello.py"), "--dump")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["Name"] == "py-hello"  # stdout stays Kong's JSON
    assert "MixedInstallWarning" in out.stderr and FIX in out.stderr


def test_the_folder_server_reports_the_mix(mixed_site: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "py-hello.py", tmp_path / "py-hello.py")
    out = run_with(mixed_site, "-c", "import sys; from kong_pdk.cli import start_server; sys.exit(start_server())",
                   "-d", str(tmp_path), "--dump-all-plugins")
    assert "MixedInstallWarning" in out.stderr and FIX in out.stderr, out.stderr


def test_the_kong_pdk_command_reports_the_mix(mixed_site: Path) -> None:
    out = run_with(mixed_site, "-m", "kong_pdk.command", "--help")
    assert "MixedInstallWarning" in out.stderr and FIX in out.stderr, out.stderr
