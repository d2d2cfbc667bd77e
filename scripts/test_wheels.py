#!/usr/bin/env python3
"""Install the built wheel into a fresh virtualenv of every Python >= 3.10 here,
with no Rust toolchain on PATH, and serve a plugin from each (``make test-wheels``).

What it proves: the wheel in ``dist/`` (manylinux2014, so glibc 2.17 and up)
installs as a binary on every supported Python (``--only-binary :all:``: pip may
not fall back to building anything) and works there without cargo; each
virtualenv then runs ``scripts/wheel_smoke.py``. Pythons are found in pyenv
(``pyenv root``/versions) and as ``python3.X`` on PATH; each distinct version is
tested once. Exits non-zero if any fails, or if fewer than ``--min-pythons``
versions were found (CI passes 4: pyenv has 3.10 to 3.13 there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "py-hello.py"
SMOKE = ROOT / "scripts" / "wheel_smoke.py"


def without_rust(path: str) -> str:
    """PATH minus every folder holding cargo or rustc, and minus our own .venv."""
    keep = []
    for folder in path.split(os.pathsep):
        if not folder or any((Path(folder) / tool).exists() for tool in ("cargo", "rustc", "rustup")):
            continue
        if Path(folder).resolve() == (ROOT / ".venv" / "bin").resolve():
            continue
        keep.append(folder)
    return os.pathsep.join(keep)


def version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def candidate_pythons() -> dict[tuple[int, int], str]:
    found: list[str] = []
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for folder in sorted(Path(root, "versions").glob("*")):
        exe = folder / "bin" / "python3"
        if exe.exists() and not (folder / "pyvenv.cfg").exists():
            found.append(str(exe))
    plain = without_rust(os.environ.get("PATH", ""))
    for minor in range(10, 20):
        exe = shutil.which(f"python3.{minor}", path=plain)
        if exe:
            found.append(exe)
    by_version: dict[tuple[int, int], str] = {}
    for exe in found:
        v = version_of(exe)
        if v is not None and v >= (3, 10) and v not in by_version:
            by_version[v] = exe
    return dict(sorted(by_version.items()))


def test_one(python: str, wheel: Path, work: Path, env: dict[str, str]) -> None:
    venv = work / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, env=env)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary", ":all:",
         f"{wheel}[testing]"],
        check=True,
        env=env,
    )
    assert shutil.which("cargo", path=env["PATH"]) is None
    subprocess.run([py, str(SMOKE), str(PLUGIN), str(work)], check=True, env=env, cwd=work, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, nargs="?", default=ROOT / "dist")
    parser.add_argument("--min-pythons", type=int, default=1)
    args = parser.parse_args()
    wheels = sorted(args.dist.glob("*-manylinux*x86_64*.whl"))
    if len(wheels) != 1:
        print(f"expected one manylinux x86_64 wheel in {args.dist}, found {[w.name for w in wheels]}", file=sys.stderr)
        return 1
    wheel = wheels[0]
    pythons = candidate_pythons()
    print(f"{wheel.name} ({wheel.stat().st_size // 1024} KiB); Pythons: "
          + ", ".join(f"{a}.{b}" for a, b in pythons))
    if len(pythons) < args.min_pythons:
        print(f"found {len(pythons)} Pythons >= 3.10, need {args.min_pythons}", file=sys.stderr)
        return 1
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CARGO_HOME", "RUSTUP_HOME")}
    env["PATH"] = without_rust(env.get("PATH", ""))
    passed, failed = [], []
    for (major, minor), python in pythons.items():
        name = f"{major}.{minor}"
        with tempfile.TemporaryDirectory(prefix=f"wheel-py{name}-", dir="/tmp") as work:
            try:
                test_one(python, wheel, Path(work), env)
                passed.append(name)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as e:
                print(f"FAILED on Python {name} ({python}): {e}", file=sys.stderr)
                failed.append(name)
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
