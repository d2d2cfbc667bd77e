"""Tools the suite installs (Makefile) are found in the suite's venv, and never skipped there.

``make test`` runs ``.venv/bin/python -m pytest`` without ``.venv/bin`` on PATH,
so a console script such as ``basedpyright`` is looked up next to the running
interpreter first. A tool that is missing makes its tests skip (saying why),
except where its absence is a broken setup: under ``CI=true``, or in a venv the
Makefile built (its ``.deps`` marker says the Makefile installed the tools).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["suite_tool", "suite_module", "must_have_tools"]


def must_have_tools() -> str | None:
    """Why a missing tool is a failure here, or None when it may be skipped."""
    if os.environ.get("CI", "").lower() == "true":
        return "CI=true"
    if (Path(sys.prefix) / ".deps").exists():
        return f"the Makefile installed the suite's tools into {sys.prefix}"
    return None


def _missing(what: str, install: str) -> None:
    reason = f"{what} is not installed ({install})"
    strict = must_have_tools()
    if strict is not None:
        pytest.fail(f"{reason}, but this run must have it: {strict}", pytrace=False)
    print(f"SKIP: {reason}")
    # Also at a test module's top level (a module that needs the tool throughout).
    pytest.skip(reason, allow_module_level=True)


def suite_tool(name: str, install: str | None = None) -> str:
    """The path of the console script ``name``: next to ``sys.executable``, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is not None:
        return found
    _missing(name, install or f"pip install {name}")
    raise AssertionError("unreachable")


def suite_module(name: str, install: str | None = None) -> None:
    """Skips (or fails, see ``must_have_tools``) unless the module ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        _missing(name, install or f"pip install {name}")
