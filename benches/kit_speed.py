#!/usr/bin/env python3
"""How long 200 kit tests of examples/py-hello.py take (a benchmark, not a test).

Writes a test module with 200 tests that each run one request through the
plugin with the ``kong`` fixture (our server in-process, Kong emulated over the
socket), runs it with pytest in a fresh process and prints the wall time, and
pytest's own summary (collection and the 200 tests).

    .venv/bin/python benches/kit_speed.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "py-hello.py"
N = 200

TEST = f'''
import pytest

@pytest.mark.parametrize("i", range({N}))
def test_hello(kong, i):
    res = kong.plugin({str(HELLO)!r}, {{"message": f"m{{i % 7}}"}}).http("GET", f"http://h{{i}}.test/p?i={{i}}")
    assert res.client_response.status == 200
    assert res.client_response.headers["x-hello-from-python"] == f"Python says m{{i % 7}} to h{{i}}.test"
'''


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "test_kit_speed.py"
        path.write_text(TEST)
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
            capture_output=True,
            text=True,
            cwd=d,
        )
        wall = time.perf_counter() - started
    summary = [line for line in out.stdout.splitlines() if " passed" in line or " failed" in line]
    print(f"{N} kit tests of examples/py-hello.py: {wall:.2f} s wall (pytest start-up included)")
    print(f"  pytest: {summary[-1] if summary else out.stdout[-500:]}")
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
