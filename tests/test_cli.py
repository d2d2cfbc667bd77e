"""The plugin file as Kong's query and start commands run it (protocol.md §1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import EXAMPLES, PLUGINS


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("flag", ["--dump", "-dump"])
def test_dump_prints_exactly_kongs_plugin_info(flag: str) -> None:
    out = run(str(PLUGINS / "behaviours.py"), flag)
    assert out.returncode == 0, out.stderr
    # Kong decodes all of stdout as JSON: nothing else may be there.
    info = json.loads(out.stdout)
    assert info == [
        {
            "Name": "behaviours",
            "Phases": ["rewrite", "access", "response", "log"],
            "Priority": 10,
            "Version": "1.2.3",
            "Schema": {
                "name": "behaviours",
                "fields": [
                    {
                        "config": {
                            "type": "record",
                            "fields": [
                                {"message": {"type": "string"}},
                                {"route_id": {"type": "string"}},
                            ],
                        }
                    }
                ],
            },
        }
    ]


def test_dump_never_emits_a_null_version(tmp_path: Path) -> None:
    plugin = tmp_path / "noversion.py"
    plugin.write_text(
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def log(self, kong): pass\n"
        "from kong_pdk.cli import start_dedicated_server\n"
        "start_dedicated_server('noversion', Plugin)\n"
    )
    info = json.loads(run(str(plugin), "--dump").stdout)
    assert info[0]["Version"] == "0.0.0"
    assert info[0]["Priority"] == 0
    assert info[0]["Phases"] == ["log"]


def test_hello_example_dump() -> None:
    info = json.loads(run(str(EXAMPLES / "py-hello.py"), "--dump").stdout)
    assert [i["Name"] for i in info] == ["py-hello"]
    assert info[0]["Phases"] == ["access"]


def test_missing_prefix_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    out = run(str(PLUGINS / "behaviours.py"), "-p", str(tmp_path / "nope"))
    assert out.returncode == 1
    assert "does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission check not observable")
def test_unwritable_prefix_is_a_clear_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    out = run(str(PLUGINS / "behaviours.py"), "-p", str(ro))
    assert out.returncode == 1 and "not writable" in out.stderr


def test_prefix_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    out = run(str(PLUGINS / "behaviours.py"), "-p", str(f))
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("flag", [["-m"], ["-m", "2"]])
def test_other_execution_models_fail_clearly_for_now(tmp_path: Path, flag: list[str]) -> None:
    out = run(str(PLUGINS / "behaviours.py"), "-p", str(tmp_path), *flag)
    assert out.returncode == 1
    assert "not yet available" in out.stderr


def test_version_flag() -> None:
    out = run(str(PLUGINS / "behaviours.py"), "--version")
    assert out.returncode == 0 and out.stdout.startswith("kong_pdk ")


def test_flags_of_the_official_package_are_accepted() -> None:
    from kong_pdk.cli import build_parser

    args = build_parser("x").parse_args(
        ["-p", "/tmp", "-v", "--socket-name", "s.sock", "--listen-queue-size", "10", "--no-lua-style"]
    )
    assert (args.kong_prefix, args.verbose, args.socket_name, args.listen_queue_size, args.lua_style) == (
        "/tmp",
        1,
        "s.sock",
        10,
        False,
    )
