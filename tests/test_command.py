"""The ``kong-pdk`` command: help, ``new`` (files that pass as generated) and ``check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite_tools import suite_tool

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "py-hello.py"


def kong_pdk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kong_pdk.command", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_help_lists_the_commands() -> None:
    out = kong_pdk("--help")
    assert out.returncode == 0, out.stderr
    for command in ("run", "new", "check"):
        assert f"    {command} " in out.stdout
    assert kong_pdk().returncode == 2  # no command: the help, on stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_help_does_not_crash(flag: str) -> None:
    out = kong_pdk("run", flag)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: kong-pdk run ")
    assert "request URL (default: http://localhost/)" in out.stdout
    assert "--model {auto,threads,greenlets,gevent,processes}" in out.stdout


def test_run_takes_options_after_the_url() -> None:
    out = kong_pdk("run", str(HELLO), "-H", "host: a.test", "http://a.test/", "--config", '{"message": "yo"}')
    assert out.returncode == 0, out.stderr
    assert "x-hello-from-python: Python says yo to a.test" in out.stdout


def test_run_an_async_plugin_awaits_it() -> None:
    plugin = ROOT / "examples" / "py-async-greeting.py"
    out = kong_pdk("run", str(plugin), "http://b.test/")
    assert out.returncode == 0, out.stderr
    assert "x-greeting: hello, b.test" in out.stdout
    assert "never awaited" not in out.stderr


def test_run_under_gevent_and_processes() -> None:
    for model in ("gevent", "processes"):
        out = kong_pdk("run", str(HELLO), "http://c.test/", "--model", model, "--workers", "2")
        assert out.returncode == 0, out.stderr
        assert "x-hello-from-python: Python says hello to c.test" in out.stdout


def test_new_writes_a_plugin_its_test_and_a_kong_conf_that_work(tmp_path: Path) -> None:
    out = kong_pdk("new", "greeter", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    plugin, test, conf = tmp_path / "greeter.py", tmp_path / "test_greeter.py", tmp_path / "greeter.kong.conf"
    assert plugin.is_file() and test.is_file() and conf.is_file()
    lines = conf.read_text().splitlines()
    assert "pluginserver_names = greeter" in lines
    assert f"pluginserver_greeter_query_cmd = {sys.executable} {plugin} --dump" in lines
    # The generated test passes as generated.
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(test)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "3 passed" in tested.stdout
    # The plugin is typed strictly.
    typed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy"), str(plugin), str(test)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert typed.returncode == 0, typed.stdout + typed.stderr
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({"include": ["greeter.py"], "extraPaths": [str(ROOT / "python")],
                                  "typeCheckingMode": "strict", "pythonVersion": "3.10"}))
    pyright = subprocess.run([suite_tool("basedpyright"), "-p", str(config)], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert pyright.returncode == 0, pyright.stdout
    # Kong's query command gets the plugin info, and nothing else.
    dumped = subprocess.run([sys.executable, str(plugin), "--dump"], capture_output=True, text=True, timeout=60)
    assert dumped.stderr == ""
    assert json.loads(dumped.stdout)[0]["Name"] == "greeter"


def test_new_refuses_a_bad_name_and_overwriting(tmp_path: Path) -> None:
    assert kong_pdk("new", "Not A Name", "--dir", str(tmp_path)).returncode == 2
    assert kong_pdk("new", "twice", "--dir", str(tmp_path)).returncode == 0
    again = kong_pdk("new", "twice", "--dir", str(tmp_path))
    assert again.returncode == 2
    assert "not overwriting" in again.stderr


def test_check_prints_the_dump_and_no_warning_for_a_good_plugin() -> None:
    out = kong_pdk("check", str(HELLO))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert json.loads(out.stdout)[0]["Version"] == "0.1.0"


LOOKUP = '''
Schema = ()
version = "1.0.0"
NAME = "py-lookup-const"


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        pass


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server
    start_dedicated_server({name}, Plugin, version, 0, Schema)
'''


@pytest.mark.parametrize(
    "call",
    [
        '"py-lookup", Plugin, version, 0, Schema',
        "NAME, Plugin, version, 0, Schema",
        'name="py-lookup", plugin=Plugin, version=version, priority=0, schema=Schema',
    ],
)
def test_check_prints_the_name_that_dump_prints(tmp_path: Path, call: str) -> None:
    # The file is py_lookup.py, its server calls itself py-lookup: Kong registers the latter.
    plugin = tmp_path / "py_lookup.py"
    plugin.write_text(LOOKUP.replace("{name}, Plugin, version, 0, Schema", call))
    dumped = subprocess.run([sys.executable, str(plugin), "--dump"], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr
    checked = kong_pdk("check", str(plugin))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)[0]["Name"] == json.loads(dumped.stdout)[0]["Name"]
    assert json.loads(checked.stdout)[0]["Name"] == ("py-lookup-const" if call.startswith("NAME") else "py-lookup")


def test_check_names_a_folder_plugin_after_its_file(tmp_path: Path) -> None:
    # No start_dedicated_server: kong-python-pluginserver names it after the file.
    plugin = tmp_path / "py_folder.py"
    plugin.write_text(LOOKUP.split("if __name__")[0])
    checked = kong_pdk("check", str(plugin))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)[0]["Name"] == "py_folder"


RAISES = '''
Schema = ()
version = "1.0.0"


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        {}["missing"]
'''


def test_run_prints_the_traceback_of_a_handler_that_raised_and_fails(tmp_path: Path) -> None:
    plugin = tmp_path / "raises.py"
    plugin.write_text(RAISES)
    out = kong_pdk("run", str(plugin))
    assert out.returncode == 1
    assert out.stdout.startswith("HTTP/1.1 500 ")  # what Kong would answer
    assert "kong-pdk run: the access handler raised:" in out.stderr
    assert "KeyError: 'missing'" in out.stderr and 'raises.py", line 11, in access' in out.stderr


def test_run_says_a_syntax_error_in_one_line(tmp_path: Path) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text('Schema = ()\nversion = "1.0"\nclass Plugin\n    pass\n')
    out = kong_pdk("run", str(plugin))
    checked = kong_pdk("check", str(plugin))
    assert out.returncode == 1 and checked.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("kong-pdk run: importing ") and "SyntaxError: expected ':'" in out.stderr
    assert out.stdout == ""


def test_run_into_a_closed_pipe_ends_quietly() -> None:
    # `kong-pdk run ... | head -0`: the reader is gone before anything is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "kong_pdk.command", "run", str(HELLO), "-v"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr, out.stderr
    assert out.returncode == 1


def test_check_lists_the_calls_protobuf_lacks(tmp_path: Path) -> None:
    plugin = tmp_path / "needs_body.py"
    plugin.write_text(
        "version = '1.0'\n"
        "class Plugin:\n"
        "    def access(self, k):\n"
        "        k.request.get_header('host')\n"
        "        k.request.get_body()\n"
        "        kong.response.error(500)\n"
    )
    as_msgpack = kong_pdk("check", str(plugin))
    assert as_msgpack.returncode == 0 and as_msgpack.stderr == "", as_msgpack.stderr
    as_protobuf = kong_pdk("check", str(plugin), "--protocol", "protobuf")
    lines = [line for line in as_protobuf.stderr.splitlines() if "ProtoBuf:1" in line]
    assert [line.split(": ")[2] for line in lines] == ["needs_body.py:5", "needs_body.py:6"]
    assert "kong.request.get_body is not available on ProtoBuf:1" in lines[0]
    assert json.loads(as_protobuf.stdout)["Protocol"] == "ProtoBuf:1"
