"""``mypy --strict`` rejects wrong plugin code and accepts the sample plugins.

Each bad case is a small plugin module written to a temp dir. Lines that must be
rejected end with ``# E: <code>`` (mypy error codes, several separated by
commas); the test asserts that mypy reports those (line, code) pairs and no
error on any other line, so a case passes only when it is rejected where and
why it should be.
The good sample plugins (``good_lua_style.py``, ``good_python_style.py``) must
check with no error at all. All files are checked in one mypy run.

mypy runs as ``python -m mypy`` with ``tests/typing/mypy.ini`` (strict,
Python 3.10, ``mypy_path`` = ``python/``). Without mypy the tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MYPY_INI = HERE / "mypy.ini"
GOOD = [HERE / "good_lua_style.py", HERE / "good_python_style.py"]

LUA_HEAD = """\
import kong_pdk.pdk.kong as kong


class Plugin:
    def access(self, kong: kong.kong) -> None:
"""
PY_HEAD = LUA_HEAD.replace("kong: kong.kong", "kong: kong.PythonStyleKong")

# name -> (head, body). The body is indented into the handler.
BAD_CASES: dict[str, tuple[str, str]] = {
    # Namespaces and names that do not exist.
    "typo_namespace": (LUA_HEAD, 'kong.reqest.get_header("host")  # E: attr-defined'),
    "typo_function": (LUA_HEAD, 'kong.request.get_heder("host")  # E: attr-defined'),
    "typo_nested_namespace": (LUA_HEAD, 'kong.service.reqest.set_header("a", "b")  # E: attr-defined'),
    "not_rpc_callable_tracing": (LUA_HEAD, 'kong.tracing.start_span("x")  # E: attr-defined'),
    "not_rpc_callable_service": (LUA_HEAD, "kong.service.set_tls_verify_store(None)  # E: attr-defined"),
    "kong_pdk_module_is_not_the_pdk": (
        "import kong_pdk.pdk.kong as kong\n\n\ndef handler() -> None:\n",
        'kong.request.get_header("host")  # E: attr-defined',
    ),
    # Wrong arguments.
    "wrong_arg_type_status": (LUA_HEAD, 'kong.response.set_status("200")  # E: arg-type'),
    "wrong_exit_status": (LUA_HEAD, 'kong.response.exit("404")  # E: arg-type'),
    "wrong_exit_body": (LUA_HEAD, "kong.response.exit(200, 42)  # E: arg-type"),
    "wrong_exit_header_value": (LUA_HEAD, 'kong.response.exit(200, "ok", {"x-a": None})  # E: dict-item'),
    "wrong_header_value": (LUA_HEAD, 'kong.response.set_header("x-a", {"k": "v"})  # E: arg-type'),
    "wrong_header_list_item": (LUA_HEAD, 'kong.service.request.set_header("x-a", [1, 2])  # E: list-item'),
    "wrong_query_value": (LUA_HEAD, 'kong.service.request.set_query({"a": 1.5})  # E: dict-item'),
    "wrong_timeouts": (LUA_HEAD, 'kong.service.set_timeouts(1000, "2s", 3000)  # E: arg-type'),
    "cdata_argument": (LUA_HEAD, 'kong.client.tls.request_client_certificate("pem")  # E: arg-type'),
    "missing_arg": (LUA_HEAD, "kong.request.get_header()  # E: call-arg"),
    "too_many_args": (LUA_HEAD, 'kong.request.get_header("a", "b")  # E: call-arg'),
    "wrong_keyword_arg": (LUA_HEAD, 'kong.request.get_header(header="host")  # E: call-arg'),
    # Lua style returns (value, err), not the value.
    "lua_tuple_as_str": (LUA_HEAD, 'host = kong.request.get_header("host")\nhost.lower()  # E: attr-defined'),
    "lua_tuple_assigned_to_str": (LUA_HEAD, 'host: str = kong.request.get_header("host")  # E: assignment'),
    "lua_tuple_concatenated": (LUA_HEAD, 'msg = "host: " + kong.request.get_host()  # E: operator'),
    "lua_value_may_be_none": (LUA_HEAD, 'host, err = kong.request.get_header("host")\nhost.lower()  # E: union-attr'),
    "lua_err_may_be_none": (LUA_HEAD, 'host, err = kong.request.get_host()\nerr.upper()  # E: union-attr'),
    # What crosses the bridge: multimaps hold lists, raw bodies are bytes.
    "multimap_values_are_lists": (
        LUA_HEAD, 'headers, _ = kong.request.get_headers()\naccept: str = headers["accept"]  # E: assignment'
    ),
    "raw_body_is_bytes": (LUA_HEAD, 'body, _ = kong.request.get_raw_body()\ntext = body + "x"  # E: operator'),
    "serialize_is_json_text": (
        PY_HEAD, "entry: dict[str, object] = kong.log.serialize()  # E: assignment"
    ),
    # kong.log used wrongly.
    "log_typo_level": (LUA_HEAD, 'kong.log.error("x")  # E: attr-defined'),
    "log_keyword": (LUA_HEAD, 'kong.log.err(message="x")  # E: call-arg'),
    "log_callable_keyword": (LUA_HEAD, 'kong.log("x", level="err")  # E: call-arg'),
    "log_inspect_on_takes_nothing": (LUA_HEAD, 'kong.log.inspect.on("x")  # E: call-arg'),
    "log_inspect_typo": (LUA_HEAD, "kong.log.inspect.of()  # E: attr-defined"),
    "log_serialize_takes_nothing": (LUA_HEAD, 'kong.log.serialize("json")  # E: call-arg'),
    "log_set_serialize_value_key": (LUA_HEAD, 'kong.log.set_serialize_value(1, "v")  # E: arg-type'),
    "log_namespace_as_str": (LUA_HEAD, 'name: str = kong.log  # E: assignment'),
    # Python style returns the value, not (value, err).
    "python_style_unpacked": (PY_HEAD, 'host, err = kong.request.get_header("host")  # E: misc'),
    "python_style_value_may_be_none": (PY_HEAD, 'kong.request.get_header("host").lower()  # E: union-attr'),
    "python_style_wrong_type": (PY_HEAD, "port: str = kong.request.get_port()  # E: assignment"),
    # The annotation itself.
    "annotation_typo": (
        "import kong_pdk.pdk.kong as kong\n\n\nclass Plugin:\n"
        "    def access(self, kong: kong.Kong) -> None:  # E: name-defined\n",
        "pass",
    ),
    "lua_value_returned_unchecked": (
        LUA_HEAD.replace("-> None", "-> str"),
        'x, err = kong.request.get_header("x")\nreturn x  # E: return-value',
    ),
}

LINE_RE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")


def case_source(head: str, body: str) -> str:
    return head + textwrap.indent(body.strip("\n") + "\n", " " * 8)


def expected_errors(source: str) -> set[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    for lineno, line in enumerate(source.splitlines(), start=1):
        if "# E: " in line:
            for code in line.split("# E: ", 1)[1].split(","):
                out.add((lineno, code.strip()))
    return out


def mypy_missing_reason() -> str | None:
    if importlib.util.find_spec("mypy") is None:
        return "mypy is not installed (pip install mypy)"
    return None


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, str, str]]]:
    """Run mypy once over every case and the good files; errors grouped by file stem."""
    reason = mypy_missing_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("mypy_cases")
    files: list[Path] = []
    for name, (head, body) in BAD_CASES.items():
        path = tmp / f"bad_{name}.py"
        path.write_text(case_source(head, body), encoding="utf-8")
        files.append(path)
    for good in GOOD:
        copy = tmp / good.name
        shutil.copy2(good, copy)
        files.append(copy)
    proc = subprocess.run(
        [
            sys.executable, "-m", "mypy",
            "--config-file", str(MYPY_INI),
            "--cache-dir", str(tmp / ".mypy_cache"),
            "--show-error-codes", "--no-pretty", "--no-error-summary",
            "--hide-error-context", "--no-color-output",
            *map(str, files),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    assert proc.returncode in (0, 1), f"mypy crashed:\n{proc.stdout}\n{proc.stderr}"
    by_file: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for line in proc.stdout.splitlines():
        m = LINE_RE.match(line)
        if m:
            by_file[Path(m["path"]).stem].append((int(m["line"]), m["code"] or "", m["msg"]))
    unexpected = set(by_file) - {p.stem for p in files}
    assert not unexpected, f"mypy reported errors outside the checked files: {dict(by_file)}"
    assert by_file, "mypy reported no error at all: the bad cases were not checked"
    return dict(by_file)


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_mypy_rejects(name: str, mypy_run: dict[str, list[tuple[int, str, str]]]) -> None:
    head, body = BAD_CASES[name]
    source = case_source(head, body)
    want = expected_errors(source)
    assert want, f"case {name} marks no line with '# E: code'"
    reported = mypy_run.get(f"bad_{name}", [])
    got = {(line, code) for line, code, _ in reported}
    detail = f"case {name}: expected {sorted(want)}, mypy said {reported}\n{source}"
    # Each marked (line, code) is reported, and nothing is reported on unmarked lines.
    # (Other codes on a marked line are allowed: newer mypy adds some, e.g. str-unpack.)
    assert want <= got, detail
    assert {line for line, _ in got} == {line for line, _ in want}, detail


@pytest.mark.parametrize("good", GOOD, ids=lambda p: p.name)
def test_mypy_accepts_good_plugin(good: Path, mypy_run: dict[str, list[tuple[int, str, str]]]) -> None:
    assert mypy_run.get(good.stem, []) == []


def test_pyright_accepts_good_plugins() -> None:
    """basedpyright (pyright strict) also accepts the typed PDK and the sample plugins."""
    exe = shutil.which("basedpyright")
    if exe is None:
        print("SKIP: basedpyright is not installed (pip install basedpyright)")
        pytest.skip("basedpyright is not installed")
    proc = subprocess.run(
        [exe, "-p", str(HERE / "pyrightconfig.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors" in proc.stdout


def test_good_plugins_annotations_evaluate_at_runtime(pdk_sandbox: Path) -> None:
    """No ``from __future__ import annotations``: ``kong.kong`` is evaluated at import."""
    script = (
        "import typing, good_lua_style as lua, good_python_style as py\n"
        "import kong_pdk.pdk.kong as kong\n"
        "for mod, want in ((lua, kong.LuaStyleKong), (py, kong.PythonStyleKong)):\n"
        "    for phase in ('access', 'response', 'log'):\n"
        "        hint = typing.get_type_hints(getattr(mod.Plugin, phase))['kong']\n"
        "        assert hint is want, (mod.__name__, phase, hint)\n"
        "    assert 'annotations' not in vars(mod), mod.__name__\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": f"{pdk_sandbox}:{HERE}", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
