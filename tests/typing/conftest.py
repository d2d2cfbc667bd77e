"""Shared fixtures for the typed-PDK tests.

``pdk_sandbox`` is a directory holding a copy of ``kong_pdk.pdk`` and
``kong_pdk.exception`` under a ``kong_pdk/__init__.py`` of its own, so the
generated modules can be imported in a subprocess without the compiled
extension that the real ``kong_pdk/__init__.py`` loads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY_SRC = REPO / "python"
TYPING_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def pdk_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pdk_sandbox")
    pkg = root / "kong_pdk"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Sandbox stand-in: no compiled extension."""\n')
    shutil.copy2(PY_SRC / "kong_pdk" / "exception.py", pkg / "exception.py")
    # kong.log's module reports a mixed install with it (issue 18, point 3).
    shutil.copy2(PY_SRC / "kong_pdk" / "install_check.py", pkg / "install_check.py")
    shutil.copytree(
        PY_SRC / "kong_pdk" / "pdk",
        pkg / "pdk",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return root
