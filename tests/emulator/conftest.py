"""Make ``kong_pdk.testing`` importable from the work tree, built or not; the Kong versions played.

``kong_pdk/__init__.py`` imports the Rust extension ``kong_pdk._core``, which may not be
built yet. The emulator does not need it, so when that import fails we register
``kong_pdk`` as a bare package pointing at ``python/kong_pdk`` (its ``__init__`` not run)
and import the testing subpackage normally. Nothing is stubbed.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

_PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def _import_kong_pdk() -> None:
    if str(_PYTHON_DIR) not in sys.path:
        sys.path.insert(0, str(_PYTHON_DIR))
    try:
        importlib.import_module("kong_pdk")
    except ImportError as exc:
        if "_core" not in str(exc):
            raise
        package = types.ModuleType("kong_pdk")
        package.__path__ = [str(_PYTHON_DIR / "kong_pdk")]
        package.__package__ = "kong_pdk"
        sys.modules["kong_pdk"] = package
    importlib.import_module("kong_pdk.testing")


_import_kong_pdk()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="kemu", dir="/tmp") as d:
        yield Path(d)


# One Kong per behaviour that differs on Kong's side (kong_pdk/testing/kong/versions.py):
# 3.4 LTS (resets one row), 3.6 (resets the plugin, also on any error; __seq__ shared)
# and 3.9+ (registers only the first dumped plugin; __ws_id).
KONG_VERSIONS = ("3.4", "3.6", "3.9")


@pytest.fixture(params=KONG_VERSIONS, ids=[f"kong{v}" for v in KONG_VERSIONS])
def kong_version(request: pytest.FixtureRequest) -> str:
    """The Kong version a behaviour test plays; every such test runs once per version."""
    version: str = request.param
    return version
