"""``kong-pdk run`` and the pytest plugin, as a plugin author uses them (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "py-hello.py"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kong_pdk.testing.run", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_the_response_like_curl_i() -> None:
    out = run_cli(str(HELLO), "-H", "host: example.com", "http://example.com/", "--config", '{"message": "hey"}')
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition("\n\n")  # text mode reads CRLF as \n
    lines = head.split("\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "x-hello-from-python: Python says hey to example.com" in lines
    assert '"method": "GET"' in body  # the echo upstream


def test_cli_verbose_lists_pdk_calls() -> None:
    out = run_cli(str(HELLO), "http://example.com/", "-v")
    assert out.returncode == 0
    assert "[access] kong.request.get_header('host') -> 'example.com'" in out.stderr
    assert "> upstream: GET http://upstream.test/" in out.stderr


def test_cli_refuses_a_config_kong_would_refuse() -> None:
    out = run_cli(str(HELLO), "--config", '{"message": 1}')
    assert out.returncode == 2
    assert "config.message: expected a string" in out.stderr


def test_cli_posts_data(tmp_path: Path) -> None:
    plugin = ROOT / "examples" / "py-body-transform.py"
    out = run_cli(str(plugin), "--config", '{"add": {"a": "1"}}', "-H", "content-type: application/json",
                  "--data", '{"b": 2}', "http://api.test/")
    assert out.returncode == 0, out.stderr
    assert '\\"a\\":\\"1\\"' in out.stdout or '"a":"1"' in out.stdout


def test_pytest_plugin_gives_the_kong_fixture(tmp_path: Path) -> None:
    (tmp_path / "my-plugin.py").write_text(HELLO.read_text())
    (tmp_path / "test_mine.py").write_text(
        "def test_it(kong):\n"
        "    res = kong.plugin('my-plugin.py', {'message': 'yo'}).http('GET', 'http://h.test/')\n"
        "    assert res.client_response.headers['x-hello-from-python'] == 'Python says yo to h.test'\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
