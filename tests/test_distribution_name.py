"""The distribution is ``kong-pdk-native``, not the official ``kong-pdk``, and a mix of both is noticed.

``kong_pdk`` (our import package) normalises to the official distribution's
name on PyPI, so every install instruction must name ``kong-pdk-native``. If
the official package was installed over ours anyway, ``import kong_pdk`` warns
and says how to repair the environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

from kong_pdk.install_check import FIX, OFFICIAL_ONLY_FILES, foreign_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "kong_pdk"


def test_distribution_name_is_our_own() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "kong-pdk-native"
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert cargo["package"]["name"] == meta["project"]["name"]


def instruction_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").rglob("*.md"))]
    return files + sorted(PACKAGE.rglob("*.py"))


def test_every_install_instruction_names_kong_pdk_native() -> None:
    wrong = {}
    for path in instruction_files():
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"pip install\s+['\"]?kong[_-]pdk(?![\w-])", text) + re.findall(r"kong_pdk\[", text)
        if found:
            wrong[str(path.relative_to(ROOT))] = found
    assert wrong == {}, f"these tell to install the official package: {wrong}"
    assert "pip install 'kong-pdk-native[testing]'" in (ROOT / "docs" / "testing.md").read_text()


def package_copy(root: Path) -> Path:
    """A site directory holding a copy of our package (with the built extension)."""
    site = root / "site"
    shutil.copytree(PACKAGE, site / "kong_pdk", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def import_kong_pdk(site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", "import kong_pdk; print(kong_pdk.__file__)"],
        capture_output=True, text=True, timeout=60, env=env,
    )


def test_a_clean_install_imports_without_a_warning(tmp_path: Path) -> None:
    site = package_copy(tmp_path)
    out = import_kong_pdk(site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(site / "kong_pdk" / "__init__.py")
    assert out.stderr == ""
    assert foreign_files(str(PACKAGE)) == []


def test_official_files_mixed_in_are_named_with_the_fix(tmp_path: Path) -> None:
    site = package_copy(tmp_path)
    # What the official wheel (kong_pdk-0.36) leaves behind when installed over ours.
    (site / "kong_pdk" / "listener.py").write_text("")
    (site / "kong_pdk" / "pdk" / "kong" / "nginx").mkdir()
    (site / "kong_pdk" / "pdk" / "kong" / "nginx" / "__init__.py").write_text("")
    out = import_kong_pdk(site)
    assert out.returncode == 0, out.stderr
    assert "MixedInstallWarning" in out.stderr
    assert "kong_pdk/listener.py" in out.stderr and "kong_pdk/pdk/kong/nginx/__init__.py" in out.stderr
    assert FIX in out.stderr


def test_official_distribution_metadata_next_to_ours_is_named(tmp_path: Path) -> None:
    site = package_copy(tmp_path)
    info = site / "kong_pdk-0.36.dist-info"
    info.mkdir()
    record = "".join(f"kong_pdk/{rel},sha256=x,1\n" for rel in OFFICIAL_ONLY_FILES)
    (info / "RECORD").write_text(record + "kong_pdk/__init__.py,sha256=x,0\n")
    out = import_kong_pdk(site)
    assert "MixedInstallWarning" in out.stderr
    assert "kong_pdk-0.36.dist-info" in out.stderr
    # Our own metadata, even under the old name, is not the official package's.
    shutil.rmtree(info)
    ours = site / "kong_pdk-0.1.0.dist-info"
    ours.mkdir()
    (ours / "RECORD").write_text("kong_pdk/__init__.py,sha256=x,0\nkong_pdk/serve.py,sha256=x,1\n")
    assert import_kong_pdk(site).stderr == ""


def test_the_command_says_it_even_when_the_official_init_replaced_ours(tmp_path: Path) -> None:
    site = package_copy(tmp_path)
    (site / "kong_pdk" / "__init__.py").write_text("")  # the official package's __init__.py is empty
    (site / "kong_pdk" / "listener.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "kong_pdk.command", "--help"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("MixedInstallWarning") == 1
    assert FIX in out.stderr
