"""tests/suite_tools.py: the suite's own tools are found in its venv, and never silently skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from suite_tools import suite_module, suite_tool


def test_basedpyright_is_found_next_to_the_interpreter() -> None:
    # make test runs .venv/bin/python without .venv/bin on PATH.
    path = suite_tool("basedpyright")
    assert Path(path).name == "basedpyright"


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must have it: CI=true"):
        suite_tool("kong-pdk-no-such-tool")
    with pytest.raises(pytest.fail.Exception, match="must have it"):
        suite_module("kong_pdk_no_such_module")


def test_a_missing_tool_fails_in_the_makefiles_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / ".deps").touch()
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="the Makefile installed"):
        suite_tool("kong-pdk-no-such-tool")


def test_a_missing_tool_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="kong-pdk-no-such-tool is not installed"):
        suite_tool("kong-pdk-no-such-tool")
