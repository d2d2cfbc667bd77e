"""A server keeps the interpreter's freed stack chunks for reuse from its
``start()`` on, in every model (src/models/chunk_cache.rs): without that,
each event's pool thread or greenlet maps and unmaps one.

Each case runs in a fresh interpreter, where nothing installed the cache
before the server's start.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    from kong_pdk import _core
    from kong_pdk.serve import build_server

    class Plugin:
        def __init__(self, config):
            self.config = config

        def access(self, kong):
            kong.response.set_header("x-a", "1")

    before = _core.stack_chunks_cached()
    server = build_server("chunks", Plugin, sys.argv[1], model=sys.argv[2], protocol=sys.argv[3])
    server.start()
    after = _core.stack_chunks_cached()
    server.shutdown(5.0)
    print(before, after, server.model)
    """
)


@pytest.mark.parametrize(
    ("model", "protocol", "core_model"),
    [
        ("threads", "msgpack", "threads"),
        ("threads", "protobuf", "threads"),
        ("greenlets", "msgpack", "greenlets"),
    ],
)
def test_the_server_caches_stack_chunks_once_started(tmp_path: Path, model: str, protocol: str, core_model: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "chunks.socket"), model, protocol],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", core_model], done.stdout + done.stderr
