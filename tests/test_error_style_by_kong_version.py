"""What raises in python style, by Kong version (issue 18, point 2), over the real socket.

A PDK function that fails with Lua's ``nil, err`` (``kong.vault.get`` of a
missing secret) reaches the plugin as ``plugin.StepError`` from Kong 2.3 - 2.8,
which raises ``PDKException`` in python style, and as a bare nil from Kong 3.x,
which returns ``None`` and raises nothing (docs/protocol.md §5.3); README.md and
docs/plugins.md say so, and the stubs type the value ``str | None``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kong_pdk.testing import KongEmulator
from kong_pdk.testing.kong.lua import LuaMulti

from serving import Served

PLUGIN = '''
import kong_pdk.pdk.kong as kong
from kong_pdk.exception import PDKException


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong: kong.PythonStyleKong) -> None:
        try:
            outcome = "returned " + repr(kong.vault.get("{vault://env/missing}"))
        except PDKException as e:
            outcome = "raised PDKException: " + str(e)
        kong.response.set_header("x-outcome", outcome)


from kong_pdk.cli import start_dedicated_server
start_dedicated_server("vaulted", Plugin, "1.0")
'''

MISSING = {"kong.vault.get": lambda ref: LuaMulti(None, "could not find secret")}


@pytest.mark.parametrize(
    ("kong_version", "outcome"),
    [
        ("2.8", "raised PDKException: could not find secret"),
        ("3.4", "returned None"),
        ("3.9", "returned None"),
    ],
)
def test_a_nil_err_failure_raises_only_on_kong_2(
    serve: Callable[..., Served], tmp_path: Path, kong_version: str, outcome: str
) -> None:
    plugin = tmp_path / "vaulted.py"
    plugin.write_text(PLUGIN)
    served = serve(plugin)
    with KongEmulator(served.socket, kong_version=kong_version, answers=MISSING) as emu:
        result = emu.run_phase("vaulted", {}, "access")
    assert result.outcome == "ret"
    assert result.calls_to("kong.response.set_header")[0].args == ("x-outcome", outcome)


def test_the_docs_say_what_raises_in_each_kong_version() -> None:
    root = Path(__file__).resolve().parents[1]
    for page in (root / "README.md", root / "docs" / "plugins.md"):
        text = page.read_text(encoding="utf-8")
        assert "| the PDK function fails | Kong 2.3 – 2.8 | Kong 3.x |" in text, page
        assert "python style returns `None` and raises nothing" in text, page
