"""Run inside a fresh virtualenv that has only the built wheel (and msgpack).

Checks what a user of the wheel meets first: the package imports from
site-packages, a plugin file answers Kong's query command (``--dump``), and the
same file started as Kong starts it serves one ``access`` event to the Kong
emulator over its Unix socket, then stops cleanly on SIGTERM. Usage:
``python wheel_smoke.py PLUGIN_FILE WORK_DIR``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import kong_pdk
from kong_pdk.testing import KongEmulator


def main() -> None:
    plugin, work = Path(sys.argv[1]), Path(sys.argv[2])
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(kong_pdk.__file__).resolve()
    assert site in where.parents, f"kong_pdk imported from {where}, not from {site}"

    dump = subprocess.run([sys.executable, str(plugin), "--dump"], capture_output=True, text=True, check=True)
    info = json.loads(dump.stdout)
    assert info[0]["Name"] == "py-hello" and info[0]["Phases"] == ["access"], info

    socket = work / "py-hello.socket"
    server = subprocess.Popen([sys.executable, str(plugin), "-p", str(work)])
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert server.poll() is None, f"server exited with {server.returncode}"
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.05)
        with KongEmulator(str(socket), answers={"kong.request.get_header": "example.com"}) as kong:
            result = kong.run_phase("py-hello", {"message": "hi"}, "access")
        assert result.outcome == "ret", result
        calls = result.calls_to("kong.response.set_header")
        assert calls[0].args == ("x-hello-from-python", "Python says hi to example.com"), calls
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0, f"server exited with {code} after SIGTERM"
    assert not socket.exists(), "socket left behind"
    print(f"ok: kong_pdk {kong_pdk.__version__} on Python {sys.version.split()[0]} ({os.path.dirname(where)})")


if __name__ == "__main__":
    main()
