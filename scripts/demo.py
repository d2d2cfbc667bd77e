"""The main job: serve a plugin file the way Kong runs it and drive one request.

Starts ``python PLUGIN --dump`` (Kong's query command) and ``python PLUGIN -p
PREFIX`` (its start command) exactly as Kong would, then plays Kong over the
Unix socket with the wire emulator for one request through every phase the
plugin has, and prints what Kong would do with the answers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kong_pdk.testing import KongEmulator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("plugin", type=Path)
    ap.add_argument("--config", default="{}", help="plugin config as JSON")
    ap.add_argument("-H", "--header", action="append", default=[], help="request header 'name: value'")
    args = ap.parse_args()
    headers = {}
    for h in args.header:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()

    info = json.loads(subprocess.run([sys.executable, str(args.plugin), "--dump"], check=True, capture_output=True).stdout)[0]
    print(f"query command: plugin {info['Name']} {info['Version']}, phases {info['Phases']}, priority {info['Priority']}")
    with tempfile.TemporaryDirectory() as prefix:
        sock = Path(prefix) / f"{info['Name']}.socket"
        server = subprocess.Popen([sys.executable, str(args.plugin), "-p", prefix])
        try:
            while not sock.exists():
                if server.poll() is not None:
                    return 1
                time.sleep(0.01)
            answers = {
                "kong.request.get_header": lambda name, *_: headers.get(str(name).lower()),
                "kong.request.get_headers": lambda *_: headers,
            }
            with KongEmulator(str(sock), answers=answers) as kong:
                for phase in info["Phases"]:
                    result = kong.run_phase(info["Name"], json.loads(args.config), phase)
                    print(f"\n[{phase}] event {result.event_id}: {result.outcome}")
                    for call in result.calls:
                        shown = ", ".join(repr(a) for a in call.args)
                        print(f"  Kong runs {call.method}({shown}) -> {call.returns[0] if call.returns else None!r}")
                    if result.terminal:
                        t = result.terminal
                        print(f"  Kong responds {t.status} {t.headers or {}} {t.body!r}")
                        break
        finally:
            server.terminate()
            server.wait(15)
    print(f"\nserver stopped with exit code {server.returncode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
