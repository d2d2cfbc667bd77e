"""The plugin file as Kong's query and start commands run it (protocol.md §1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import plugin_class_of
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


@pytest.mark.parametrize("kong_version", ["3.4", "3.6", "3.9"])
def test_every_kong_version_registers_the_dumped_plugin(kong_version: str) -> None:
    # One plugin per file: 3.9's "first entry only" and older "every entry" agree.
    from kong_pdk.testing import KongEmulator

    dump = run(str(EXAMPLES / "py-hello.py"), "-dump").stdout
    with KongEmulator("/nonexistent.socket", kong_version=kong_version) as kong:
        assert kong.register_plugins(dump).names == ["py-hello"]
        assert kong.plugins["py-hello"]["Version"] == "0.1.0" and kong.log == []


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


def test_worker_processes_and_gevent_cannot_be_combined(tmp_path: Path) -> None:
    out = run(str(PLUGINS / "behaviours.py"), "-p", str(tmp_path), "-m", "2", "-g")
    assert out.returncode == 1
    assert "cannot be combined" in out.stderr and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", [["-m"], ["-m", "2"]])
def test_dump_with_m_starts_no_worker(tmp_path: Path, flag: list[str]) -> None:
    # Kong runs the query command often, before the server exists (§1.4):
    # -m on it must not spawn anything or touch the prefix.
    t0 = time.monotonic()
    out = run(str(PLUGINS / "behaviours.py"), "--dump", "-p", str(tmp_path), *flag)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["Name"] == "behaviours"
    assert os.listdir(tmp_path) == []
    assert time.monotonic() - t0 < 10


def test_m_defaults_to_one_worker_per_cpu(tmp_path: Path) -> None:
    from kong_pdk.serve import worker_commands

    Plugin = plugin_class_of(PLUGINS / "behaviours.py", "behaviours_for_test_cli")
    cmds = worker_commands(Plugin, str(tmp_path / "b.socket"), 0, True, {"event_timeout": 2.0}, ["-v"])
    assert len(cmds) == (os.cpu_count() or 1)
    argv, sock = cmds[0]
    assert argv[1] == str(PLUGINS / "behaviours.py")
    assert argv[argv.index("--worker-socket") + 1] == sock == str(tmp_path / ".b.socket.w0")
    # The worker's own deadline is a safety net behind the core's.
    assert float(argv[argv.index("--event-timeout") + 1]) > 2.0
    assert argv[-1] == "-v" and "--no-lua-style" not in argv
    long_dir = tmp_path / ("d" * 90)
    _, far = worker_commands(Plugin, str(long_dir / "b.socket"), 1, False, {}, [])[0]
    assert len(far) < 100 and far.endswith(".w0")


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
