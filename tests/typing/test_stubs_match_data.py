"""The committed typed PDK matches ``pdk-api.json`` and ``scripts/gen_pdk.py``.

* Regenerating into a temp dir gives exactly the committed files (no hand
  edits, no stale files, nothing missing).
* At runtime (Python 3.10 and the current interpreter) every RPC-callable
  function is reachable from each of the four root classes (``kong.kong``,
  ``kong.PythonStyleKong``, ``kong.AsyncLuaStyleKong``,
  ``kong.AsyncPythonStyleKong``) with the Lua parameter names and the return
  type the data says crosses the bridge (wrapped in ``Awaitable`` for the async
  classes, ``NoReturn`` for terminal calls in every style).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "scripts" / "gen_pdk.py"
DATA = REPO / "python" / "kong_pdk" / "pdk" / "pdk-api.json"
OWNED_DIRS = ("python/kong_pdk/pdk/kong", "docs/pdk")


def generated_tree(root: Path) -> dict[str, str]:
    """The generator-owned files under ``root``, relative path -> text."""
    files: dict[str, str] = {}
    for rel in OWNED_DIRS:
        base = root / rel
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts:
                    files[p.relative_to(root).as_posix()] = p.read_text(encoding="utf-8")
    return files


def run_gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN), *args], capture_output=True, text=True, timeout=60
    )


def test_committed_files_equal_fresh_generation(tmp_path: Path) -> None:
    proc = run_gen("--out-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    fresh = generated_tree(tmp_path)
    committed = generated_tree(REPO)
    assert "python/kong_pdk/pdk/kong/__init__.py" in fresh
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(set(committed) - set(fresh))
    differ = sorted(rel for rel in set(fresh) & set(committed) if fresh[rel] != committed[rel])
    assert (missing, stale, differ) == ([], [], []), (
        "generated files are out of date; run: python scripts/gen_pdk.py"
    )


def test_check_mode_passes_on_repo() -> None:
    proc = run_gen("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_mode_catches_hand_edit_and_stale_file(tmp_path: Path) -> None:
    assert run_gen("--out-root", str(tmp_path)).returncode == 0
    edited = tmp_path / "python/kong_pdk/pdk/kong/request.py"
    edited.write_text(edited.read_text(encoding="utf-8") + "# hand edit\n", encoding="utf-8")
    (tmp_path / "docs/pdk/kong.gone.md").write_text("stale\n", encoding="utf-8")
    proc = run_gen("--check", "--out-root", str(tmp_path))
    assert proc.returncode == 1
    assert "would change: python/kong_pdk/pdk/kong/request.py" in proc.stdout
    assert "would delete: docs/pdk/kong.gone.md" in proc.stdout
    # Regenerating repairs both.
    assert run_gen("--out-root", str(tmp_path)).returncode == 0
    assert run_gen("--check", "--out-root", str(tmp_path)).returncode == 0
    assert not (tmp_path / "docs/pdk/kong.gone.md").exists()


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_gen("--out-root", str(a)).returncode == 0
    assert run_gen("--out-root", str(b)).returncode == 0
    assert generated_tree(a) == generated_tree(b)


# Runs inside the sandbox interpreter; prints "OK <n>" after checking n functions.
RUNTIME_CHECK = r'''
import inspect, json, sys, typing
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, NoReturn

import kong_pdk.pdk.kong as kong

data = json.load(open(sys.argv[1], encoding="utf-8"))
callable_fns = [f for f in data["functions"] if f["rpc_callable"]]
assert kong.kong is kong.LuaStyleKong, "kong.kong must be the lua-style class"
ROOTS = {
    "LuaStyle": kong.LuaStyleKong,
    "PythonStyle": kong.PythonStyleKong,
    "AsyncLuaStyle": kong.AsyncLuaStyleKong,
    "AsyncPythonStyle": kong.AsyncPythonStyleKong,
}
assert all(isinstance(root, type) for root in ROOTS.values())
assert set(kong.__all__) == {p + "Kong" for p in ROOTS} | {"kong"}, kong.__all__
ns = {"Any": Any, "NoReturn": NoReturn, "Mapping": Mapping, "Sequence": Sequence,
      "Awaitable": Awaitable}


def resolve(root, dotted):
    """Walk kong.a.b.c through property annotations; return (owner class, member)."""
    cls = root
    parts = dotted.split(".")[1:]
    for i, part in enumerate(parts):
        attr = inspect.getattr_static(cls, part, None)
        if attr is None:
            raise AssertionError(f"{dotted}: {cls.__name__} has no {part}")
        if isinstance(attr, property):
            cls = typing.get_type_hints(attr.fget)["return"]
            if i == len(parts) - 1:
                return cls, cls.__call__
        elif i == len(parts) - 1:
            return cls, attr
        else:
            raise AssertionError(f"{dotted}: {part} is not a namespace")
    raise AssertionError(dotted)


for f in callable_fns:
    for prefix, root in ROOTS.items():
        lua, aio = "Lua" in prefix, prefix.startswith("Async")
        owner, method = resolve(root, f["name"])
        # Every namespace on the way is of the same style as the root.
        assert owner.__name__.startswith(prefix), (f["name"], prefix, owner.__name__)
        assert method.__doc__.startswith(f["name"] + "("), (f["name"], method.__doc__[:40])
        sig = inspect.signature(method)
        params = list(sig.parameters.values())[1:]
        assert [p.name for p in params] == [p["name"] for p in f["params"]], f["name"]
        for p, d in zip(params, f["params"]):
            if d.get("variadic"):
                assert p.kind is p.VAR_POSITIONAL, f["name"]
            else:
                assert p.kind is p.POSITIONAL_OR_KEYWORD, f["name"]
                assert (p.default is None) == d["optional"], (f["name"], p.name)
        ret = typing.get_type_hints(method)["return"]
        wire = eval(f["wire_return"], ns)
        if f["terminal"]:
            want = NoReturn  # in every style: the call ends the handler, nothing to await
        elif lua:
            want = tuple[wire, str | None]
        elif wire is None and not aio:
            want = type(None)  # get_type_hints turns a bare None into NoneType
        else:
            want = wire
        if aio and not f["terminal"]:
            want = Awaitable[want]
        assert ret == want, (f["name"], prefix, ret, want)
print("OK", len(callable_fns))
'''


def python310() -> str | None:
    """The real path of a Python 3.10 interpreter, if one is installed."""
    candidates = [shutil.which("python3.10")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    for exe in filter(None, candidates):
        probe = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[:2] == (3, 10), sys.executable)"],
            capture_output=True, text=True, timeout=60,
        )
        ok, _, path = probe.stdout.strip().partition(" ")
        if probe.returncode == 0 and ok == "True":
            return path
    return None


def generator() -> Any:
    """scripts/gen_pdk.py as a module."""
    spec = importlib.util.spec_from_file_location("gen_pdk", GEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_pdk"] = module
    spec.loader.exec_module(module)
    return module


def test_a_parsed_body_may_be_a_list() -> None:
    """A JSON array body arrives as a list: the stubs must not promise a dict."""
    import kong_pdk.pdk.kong as kong

    for cls, name in ((kong.LuaStyleKong, "request"), (kong.PythonStyleKong, "request")):
        get_body = typing.get_type_hints(getattr(cls, name).fget)["return"].get_body
        ret = typing.get_type_hints(get_body)["return"]
        assert "list[typing.Any]" in str(ret), ret
    data = generator().load(DATA)
    rows = {f["name"]: f for f in data["functions"]}
    assert rows["kong.service.response.get_body"]["wire_return"] == "dict[str, Any] | list[Any] | None"


@pytest.mark.parametrize("python", ["current", "3.10"])
def test_runtime_classes_match_data(python: str, pdk_sandbox: Path, tmp_path: Path) -> None:
    exe = sys.executable if python == "current" else python310()
    if exe is None:
        pytest.skip("python3.10 is not installed; the generated modules target 3.10+")
    env = {**os.environ, "PYTHONPATH": str(pdk_sandbox), "PYTHONDONTWRITEBYTECODE": "1"}
    corrected = tmp_path / "pdk-api.json"  # the data as the generator reads it
    corrected.write_text(json.dumps(generator().load(DATA)), encoding="utf-8")
    proc = subprocess.run(
        [exe, "-c", RUNTIME_CHECK, str(corrected)],
        cwd=pdk_sandbox, capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    n_callable = sum(1 for f in json.loads(DATA.read_text(encoding="utf-8"))["functions"]
                     if f["rpc_callable"])
    assert proc.stdout.split() == ["OK", str(n_callable)]
