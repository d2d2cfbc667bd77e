"""The layout of ``kong_pdk.testing``, checked by reading every import (ast) and by importing.

Sub-packages import only from those before them: ``kong`` (Kong's side of the
wire: nothing of kong_pdk outside itself, so never the native core), ``http``,
``fake``, then ``kit`` (which serves plugins with the core). The top-level
entry points import none of them when imported, so pytest's plugin and
``kong-pdk run`` load without the testing extra, and so does ``ConfigError``,
which plugin authors' test files import at collection.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from suite_tools import suite_module

TESTING = Path(__file__).resolve().parents[2] / "python" / "kong_pdk" / "testing"

# What each sub-package may import from kong_pdk (prefixes); the stdlib and msgpack are free.
ALLOWED = {
    "kong": ("kong_pdk.testing.kong",),
    "http": ("kong_pdk.testing.kong", "kong_pdk.testing.http"),
    "fake": ("kong_pdk.testing.kong", "kong_pdk.testing.http", "kong_pdk.testing.fake"),
    "kit": ("kong_pdk",),
}
ENTRY_POINTS = ("__init__.py", "pytest_plugin.py", "run.py")

# The checks that import need kong_pdk itself, whose __init__ loads the native core;
# the emulator's tests otherwise run on an unbuilt tree too (conftest.py).
def needs_core() -> None:
    """Skips, saying why, when the core is not built; a failure where it must be (suite_tools)."""
    suite_module("kong_pdk._core", "make dev")


def module_name(path: Path) -> str:
    parts = path.relative_to(TESTING.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ""
    if path.is_relative_to(TESTING):
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports pkg.sub when sub is a module.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def own_imports(found: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(line, name) for line, name in found if name == "kong_pdk" or name.startswith("kong_pdk.")]


@pytest.mark.parametrize("sub", sorted(ALLOWED))
def test_each_sub_package_imports_only_the_layers_before_it(sub: str) -> None:
    files = sorted((TESTING / sub).rglob("*.py"))
    assert files, f"no modules under testing/{sub}"
    bad = [
        f"{path.relative_to(TESTING)}:{line}: {name}"
        for path in files
        for line, name in own_imports(imports(path))
        if not any(name == p or name.startswith(p + ".") for p in ALLOWED[sub])
    ]
    assert bad == []


def test_the_walk_sees_an_import_of_the_core(tmp_path: Path) -> None:
    # The check above can fail: a module of testing/kong importing the core is caught.
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from kong_pdk import _core\n    import kong_pdk.serve\n")
    assert [name for _, name in imports(sneaky)] == ["kong_pdk._core", "kong_pdk.serve"]


def test_every_module_belongs_to_a_sub_package_or_is_an_entry_point_or_a_documented_path() -> None:
    top = sorted(p.name for p in TESTING.glob("*.py"))
    documented = ("loader.py", "schema.py", "world.py")  # docs/testing.md names these paths
    assert top == sorted(ENTRY_POINTS + documented)
    assert sorted(p.name for p in TESTING.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(ALLOWED)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_import_nothing_of_the_kit_when_imported(name: str) -> None:
    top = own_imports(imports(TESTING / name, top_level_only=True))
    assert top == []


def loaded_after(code: str) -> list[str]:
    """The modules of interest in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + (
        "\nimport sys\n"
        "print(sorted(m for m in sys.modules if m == 'msgpack' or m.startswith('kong_pdk.testing.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found: list[str] = ast.literal_eval(out.stdout.strip())
    return found


def test_importing_the_entry_points_loads_no_sub_package() -> None:
    needs_core()
    loaded = loaded_after("import kong_pdk.testing, kong_pdk.testing.pytest_plugin, kong_pdk.testing.run")
    assert loaded == ["kong_pdk.testing.pytest_plugin", "kong_pdk.testing.run"]


def test_config_error_and_the_emulator_import_without_msgpack() -> None:
    needs_core()
    # msgpack is imported on the first read of a reply (kong/wire.py), so a plugin's
    # test file importing ConfigError collects in an install without the testing extra.
    loaded = loaded_after("from kong_pdk.testing.schema import ConfigError\nfrom kong_pdk.testing import KongEmulator")
    assert "msgpack" not in loaded
    assert "kong_pdk.testing.kit.schema" in loaded and "kong_pdk.testing.kong.emulator" in loaded


def test_every_public_name_resolves_from_its_sub_package() -> None:
    needs_core()
    import kong_pdk.testing as testing

    for name in testing.__all__:
        value = getattr(testing, name)
        home = getattr(value, "__module__", None)
        if isinstance(value, type) and home is not None:
            assert home.split(".")[2] in ALLOWED, (name, home)
    with pytest.raises(AttributeError):
        getattr(testing, "NotAName")  # noqa: B009 (a name the module's type does not have)
