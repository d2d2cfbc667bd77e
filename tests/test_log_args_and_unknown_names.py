"""Drop-in behaviour of real plugins (issue 18, point 7), over the real socket.

* Log message arguments are rendered as the official package renders them: an
  argument of exactly str, int, list or dict goes as it is, anything else
  (bool, float, None, bytes, objects) as its Python ``str()``, so Kong's error
  log reads the same line with either server.
* A name the PDK does not have (``kong.log.error``) is sent to Kong, which
  logs "could not find pdk method" and answers nil; the request goes on. The
  server logs a warning naming the closest real name.

The expected values were observed on the official kong-pdk 0.36 with the same
plugin and emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kong_pdk.testing import KongEmulator

from serving import Served

PLUGIN = '''
import collections


class Shown:
    def __str__(self):
        return "shown-by-str"

    def __repr__(self):
        return "shown-by-repr"


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        kong.log.err("a", True, None, b"by\\xfftes", 1.5, 3, [1, True, None], {"k": b"v", "o": (1, 2)},
                     Shown(), (1, 2), collections.OrderedDict(a=1), None)
        kong.log("plain", False)
        kong.log.inspect(None)
        kong.log.set_serialize_value("flag", True)  # data, not a message: keeps its type
        got = kong.log.error("misnamed", 1)
        kong.log.notice("after", repr(got))
        kong.nosuch.thing("y")
        kong.response.set_header("x-went-on", "yes")


from kong_pdk.cli import start_dedicated_server
start_dedicated_server("compat", Plugin, "1.0")
'''


def test_log_arguments_and_unknown_names_behave_as_the_official(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    plugin = tmp_path / "compat.py"
    plugin.write_text(PLUGIN)
    served = serve(plugin)
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("compat", {}, "access")
    calls = [(c.method, c.raw_args) for c in result.calls]
    assert calls == [
        ("kong.log.err", [
            "a", "True", "None", "b'by\\xfftes'", "1.5", 3, [1, True, None], {"k": b"v", "o": [1, 2]},
            "shown-by-str", "(1, 2)", "OrderedDict([('a', 1)])", "None",
        ]),
        ("kong.log", ["plain", "False"]),
        ("kong.log.inspect", ["None"]),
        ("kong.log.set_serialize_value", ["flag", True]),
        ("kong.log.error", ["misnamed", 1]),
        ("kong.log.notice", ["after", "(None, None)"]),
        ("kong.nosuch.thing", ["y"]),
        ("kong.response.set_header", ["x-went-on", "yes"]),
    ]
    # Kong's side: logged, answered nil, and the handler went on to the end.
    assert result.outcome == "ret"
    assert "could not find pdk method: kong.log.error" in result.log
    assert "could not find pdk method: kong.nosuch.thing" in result.log
    log = served.wait_log("kong.log.error is not a Kong PDK function or namespace; did you mean kong.log.err?")
    assert "WARN" in log.split("kong.log.error is not")[0].splitlines()[-1]
    served.wait_log("kong.nosuch is not a Kong PDK function or namespace")
