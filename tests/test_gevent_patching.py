"""-g patches before the plugin's own imports: no MonkeyPatchWarning, patched modules.

A plugin file imports ``ssl``/``socket`` (or ``requests``) at its top, before
``start_dedicated_server`` sees ``-g``; the server then re-executes the file
(same pid) through ``kong_pdk.gevent_first``, which patches first.
"""

from __future__ import annotations

from collections.abc import Callable

from kong_pdk.testing import KongEmulator

from serving import Served
from suite_tools import suite_module


def test_a_plugin_importing_ssl_first_runs_patched(serve: Callable[..., Served]) -> None:
    suite_module("gevent", "pip install 'kong-pdk-native[gevent]'")
    served = serve("imports_ssl_first.py", "-g")
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("imports_ssl_first", {}, "access")
    assert result.outcome == "ret"
    headers = {c.args[0]: c.args[1] for c in result.calls_to("kong.response.set_header")}
    assert headers["x-socket-patched"] == "True"
    assert headers["x-ssl-patched"] == "True"
    assert headers["x-socket-is-gevents"] == "True"
    assert headers["x-sslcontext-from"].startswith("gevent.")
    assert headers["x-pid"] == str(served.proc.pid)  # exec'd in place: Kong's child is still the server
    served.stop()
    log = served.log()
    assert "MonkeyPatchWarning" not in log
    assert "serving plugin imports_ssl_first" in log
