"""A fresh venv holding our package and exactly the distributions an install would bring.

``pip install 'kong-pdk-native[EXTRAS]'`` from PyPI needs the network and a
wheel build; this builds the same environment in a second: a venv (not
``--system-site-packages``) gets our package through a ``.pth`` at the source
tree (which holds the built extension), the entry points our wheel declares
(read from pyproject.toml), and the distributions that pyproject.toml's extras
require (and what they require), linked from the suite's venv, with their
console scripts in ``bin/`` as pip would write them. Nothing else: what an
extra forgets is missing here too.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "linked_venv"]


def _distributions_of(name: str, seen: set[str]) -> None:
    """``name`` and what it requires here (markers evaluated, extras left out)."""
    key = name.lower().replace("_", "-")
    if key in seen:
        return
    seen.add(key)
    for spec in importlib.metadata.requires(name) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            _distributions_of(req.name, seen)


def _script(python: Path, target: str) -> str:
    module, _, attr = target.partition(":")
    call = f"{module}.{attr}()" if attr else f"{module}.main()"
    return f"#!{python}\nimport sys\nimport {module}\nsys.exit({call})\n"


def linked_venv(root: Path, extras: Iterable[str] = (), also: Iterable[str] = ()) -> tuple[Path, set[str]]:
    """The venv's python and the distributions linked into it (names normalised)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    bindir = python.parent
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    site = Path(purelib)
    (site / "kong_pdk_source.pth").write_text(f"{ROOT / 'python'}\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: 0.0.0\n")
    sections = {"console_scripts": project["scripts"], **project["entry-points"]}
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) for group, items in sections.items())
    )
    scripts: dict[str, str] = dict(project["scripts"])
    wanted: set[str] = set()
    # What every install brings (greenlet), then the extras asked for.
    for spec in project["dependencies"]:
        _distributions_of(Requirement(spec).name, wanted)
    for extra in extras:
        for spec in project["optional-dependencies"][extra]:
            _distributions_of(Requirement(spec).name, wanted)
    for name in also:
        _distributions_of(name, wanted)
    for name in wanted:
        dist = importlib.metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (site / top).exists():
                (site / top).symlink_to(target)
        scripts.update({ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"})
    for name, target in scripts.items():
        (bindir / name).write_text(_script(python, target))
        (bindir / name).chmod(0o755)
    return python, wanted
