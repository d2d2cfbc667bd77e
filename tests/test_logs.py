"""The core's and the Python side's log lines share one format on stderr."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

from serving import Served

LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (ERROR|WARN |INFO |DEBUG|TRACE)\] ")


def test_rust_and_python_lines_have_one_format(serve: Callable[..., Served]) -> None:
    served = serve("py-hello.py")
    served.wait_log("serving plugin")  # logged by the core
    assert served.stop(signal.SIGTERM) == 0
    log = served.log()
    assert "received SIGTERM" in log, log  # logged by the Python side
    headed = [line for line in log.splitlines() if line.startswith("[")]
    assert len(headed) >= 2, log
    bad = [line for line in headed if not LINE.match(line)]
    assert not bad, f"lines in another format: {bad}"
