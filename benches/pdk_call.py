#!/usr/bin/env python3
"""CPU cost of one PDK call on the proxy path, per kind of call (a benchmark, not a test).

Serves benches/plugins/pdk_call.py with our server over its real Unix socket
and drives it with the Python Kong emulator (one connection, one event at a
time). Each access event makes --reps calls of each kind in the plugin's
KINDS list (attribute resolution alone, a no-argument getter, a one-argument
getter, a setter, a three-level path, a log call, a getter answered with a
10-header dict).

Two numbers per kind, as the median over --events events:

* handler µs/call: the handler thread's own CPU time per call, measured in
  the plugin with ``time.thread_time_ns``: attribute resolution, name and
  phase checks, argument encoding, the reply write, and converting Kong's
  answer to Python. Waiting for Kong costs nothing here (the thread is
  detached and blocked). With --async it is the event loop thread's time
  instead, loop machinery included.
* and, for all kinds together, server µs/call: the whole server's CPU
  (every thread, from /proc/PID/task/*/schedstat) over the run divided by
  the calls, which adds the socket reader's decoding of each Step and the
  wake-ups between threads.

The emulator is slow Python, but it runs in this process, not in the
server, so it stretches the wall time and not the server's CPU numbers.
The server is pinned to the last CPU and this process to the first unless
--no-pin.

On a busy machine times move by more than the differences being measured;
instruction counts do not. --under runs the server under a command, e.g.
callgrind counting only inside the proxy's entry points (the `kong.x`
attribute lookups and the calls, with all they do until the answer is a
Python object):

    .venv/bin/python benches/pdk_call.py [--async] [--events 30] [--reps 200]
    .venv/bin/python benches/pdk_call.py --events 3 --reps 50 --under "valgrind --tool=callgrind \
        --callgrind-out-file=/tmp/pdk.out --toggle-collect='pyo3::impl_::trampoline::*'"
    callgrind_annotate /tmp/pdk.out | head -30   # Ir in the proxy path, by function

(build with `maturin develop --profile profiling` for function names). The
per-call figure is the total Ir over warm-up and measured calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kong_pdk.testing import KongEmulator

PLUGIN = Path(__file__).resolve().parent / "plugins" / "pdk_call.py"
NAME = "bench-pdk-call"
ANSWERS = {
    "kong.request.get_path": "/some/path",
    "kong.request.get_header": "example.com",
    "kong.response.set_header": None,
    "kong.ctx.shared.set": None,
    "kong.log.debug": None,
    "kong.request.get_headers": {f"x-header-{i}": f"value {i}" for i in range(10)},
}


def server_cpu_ns(pid: int) -> int:
    """CPU time of every live thread of `pid`, in ns."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30, help="measured events (default 30)")
    ap.add_argument("--reps", type=int, default=200, help="calls of each kind per event (default 200)")
    ap.add_argument("--async", dest="is_async", action="store_true", help="an async def handler, awaited")
    ap.add_argument("--no-pin", action="store_true", help="leave CPU affinity alone")
    ap.add_argument("--under", default="", help="a command to run the server under (valgrind ...)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as prefix:
        out = Path(prefix) / "per-event.jsonl"
        env = dict(os.environ, PDK_CALL_OUT=str(out), PDK_CALL_ASYNC="1" if args.is_async else "0")
        sock = Path(prefix) / f"{NAME}.socket"
        argv = [*shlex.split(args.under), sys.executable, str(PLUGIN), "-p", prefix]
        server = subprocess.Popen(argv, env=env)
        try:
            cpus = sorted(os.sched_getaffinity(0))
            if not args.no_pin and len(cpus) > 1:
                os.sched_setaffinity(server.pid, {cpus[-1]})
                os.sched_setaffinity(0, {cpus[0]})
            deadline = time.monotonic() + (300 if args.under else 30)
            while not sock.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    print("the server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            with KongEmulator(str(sock), answers=ANSWERS) as kong:
                iid = kong.start_instance(NAME, {"reps": args.reps})
                # Warm-up: first-use caches, the thread pool, the loop.
                for _ in range(3):
                    assert kong.handle_event(iid, "access").outcome == "ret"
                out.unlink(missing_ok=True)
                cpu_before = server_cpu_ns(server.pid)
                for _ in range(args.events):
                    assert kong.handle_event(iid, "access").outcome == "ret"
                cpu_after = server_cpu_ns(server.pid)
        finally:
            server.terminate()
            server.wait(15)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = list(rows[0])
    calls = args.events * args.reps * sum(1 for k in kinds if "no call" not in k)
    model = "async def, awaited" if args.is_async else "def, on a thread"
    print(f"PDK call cost, {model}: {args.events} events × {args.reps} calls × {len(kinds)} kinds")
    print(f"{'call':30} handler µs/call (median, min)")
    for kind in kinds:
        values = [row[kind] / 1000 for row in rows]
        print(f"{kind:30} {statistics.median(values):8.2f} {min(values):8.2f}")
    print(f"server µs/call, all kinds, every thread: {(cpu_after - cpu_before) / 1000 / calls:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
