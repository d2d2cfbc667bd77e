"""The release workflow (.github/workflows/release.yml) is well-formed.

It cannot run here (it needs hosted runners), so this checks what can go wrong
without running it: the YAML loads, every job that `needs` another names a real
one, the publish job waits for every build, the wheels are built by maturin's
own action for each platform we promise, and the files its steps use exist.
``actionlint`` checks it further when it is installed (not from PyPI or Debian
here, so usually not).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs requirements (requirements-docs.txt)")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def maturin_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith("PyO3/maturin-action@")]


def test_jobs_and_needs() -> None:
    jobs = workflow()["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, f"{name} needs an unknown job {need}"
    builds = {n for n, j in jobs.items() if maturin_steps(j) and n != "publish"}
    assert builds == {"linux", "musllinux", "macos", "sdist"}
    assert set(jobs["publish"]["needs"]) == builds
    assert jobs["publish"]["permissions"] == {"id-token": "write"}
    assert "refs/tags/v" in jobs["publish"]["if"]


def test_platforms_built_with_maturin_action() -> None:
    jobs = workflow()["jobs"]
    targets = {(name, inc["target"]) for name in ("linux", "musllinux", "macos")
               for inc in jobs[name]["strategy"]["matrix"]["include"]}
    assert targets == {(n, t) for n in ("linux", "musllinux", "macos") for t in ("x86_64", "aarch64")}
    assert maturin_steps(jobs["linux"])[0]["with"]["manylinux"] == "2014"
    assert maturin_steps(jobs["musllinux"])[0]["with"]["manylinux"] == "musllinux_1_2"
    assert maturin_steps(jobs["sdist"])[0]["with"]["command"] == "sdist"
    for job in jobs.values():
        for step in maturin_steps(job):
            assert step["uses"] == "PyO3/maturin-action@v1"


def test_files_used_by_steps_exist() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    used = set(re.findall(r"\b((?:scripts|examples)/[\w./-]+)", text))
    assert used, "the smoke test step is expected to use repository files"
    for path in used:
        assert (ROOT / path).is_file(), path


def test_actionlint() -> None:
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (neither PyPI nor Debian provide it here)")
    out = subprocess.run([exe, str(WORKFLOW)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


CI_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_ci_workflow_runs_the_ci_entry_point() -> None:
    """Every push to main and every pull request runs .ci/run, with the four
    Pythons its wheel check asks for and a Rust toolchain with the lints."""
    data = yaml.safe_load(CI_WORKFLOW.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    triggers = data.get("on", data.get(True))
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    steps = data["jobs"]["test"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    assert runs == ["bash .ci/run"]
    assert (ROOT / ".ci" / "run").exists()
    pythons = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert sorted(pythons["with"]["python-version"].split()) == ["3.10", "3.11", "3.12", "3.13"]
    assert "MIN_PYTHONS=4" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    rust = next(s for s in steps if str(s.get("uses", "")).startswith("dtolnay/rust-toolchain@"))
    assert set(rust["with"]["components"].replace(",", " ").split()) == {"rustfmt", "clippy"}
