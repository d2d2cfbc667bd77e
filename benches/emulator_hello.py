#!/usr/bin/env python3
"""Events/s of examples/py-hello.py driven by the Python Kong emulator.

The emulator is a test tool, not a load generator (benches/loadgen is), so
this number is bounded by the emulator's own Python; it shows what a test run
reaches. Not a test.

    .venv/bin/python benches/emulator_hello.py [--events N] [--threads T]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kong_pdk.testing import KongEmulator

HELLO = Path(__file__).resolve().parent.parent / "examples" / "py-hello.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as prefix:
        sock = Path(prefix) / "py-hello.socket"
        server = subprocess.Popen([sys.executable, str(HELLO), "-p", prefix])
        try:
            while not sock.exists():
                time.sleep(0.01)
            answers = {"kong.request.get_header": "example.com"}
            with KongEmulator(str(sock), answers=answers) as kong:
                iid = kong.start_instance("py-hello", {"message": "hi"})
                per_thread = args.events // args.threads

                def run(_: int) -> int:
                    for _ in range(per_thread):
                        assert kong.handle_event(iid, "access").outcome == "ret"
                    return per_thread

                start = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    done = sum(pool.map(run, range(args.threads)))
                elapsed = time.perf_counter() - start
            print(f"{done} hello events through the emulator with {args.threads} threads: "
                  f"{done / elapsed:,.0f} events/s")
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
