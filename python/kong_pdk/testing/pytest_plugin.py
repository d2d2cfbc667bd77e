"""pytest plugin of the kit, registered under the ``pytest11`` entry point ``kong_pdk``.

Installing ``kong_pdk`` is enough for ``pytest`` in a plugin's repository to get:

* the ``kong`` fixture: a ``KongKit`` whose ``plugin(...)`` returns a
  ``PluginRunner`` for a plugin file path, a ``PluginSpec`` or a class;
* ``kong.load(path)``: the ``PluginSpec`` of a plugin file.

Example::

    def test_greets(kong):
        hello = kong.plugin("py-hello.py", {"message": "hi"})
        res = hello.http("GET", "http://example.com/")
        assert res.client_response.headers["x-hello-from-python"] == "Python says hi to example.com"

Relative paths are looked up from the test file's directory, then from the
directory pytest runs in. Nothing is imported from the native core nor from
msgpack until the fixture is used, so the plugin costs nothing to test sessions
that do not use it, and never breaks them: in an install without the testing
extra, only a test that uses the fixture fails, with a one-line message.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kong_pdk.testing.kit.loader import PluginSpec
    from kong_pdk.testing.kit.runner import PluginRunner

__all__ = ["KongKit", "kong", "MISSING_EXTRA"]

MISSING_EXTRA = "the kong fixture needs msgpack: pip install 'kong-pdk-native[testing]'"


class KongKit:
    """What the ``kong`` fixture gives: plugin loading and runners with this test's base dir."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._loaded: dict[Path, PluginSpec] = {}

    def path(self, path: str | Path) -> Path:
        p = Path(path)
        if p.is_absolute():
            return p
        for root in (self.base, Path.cwd()):
            if (root / p).exists():
                return root / p
        return p

    def load(self, path: str | Path, name: str | None = None) -> PluginSpec:
        """The ``PluginSpec`` of a plugin file (imported once per session and path)."""
        from kong_pdk.testing.kit.loader import load_plugin

        resolved = self.path(path).resolve()
        key = resolved if name is None else resolved / name
        if key not in _SESSION_SPECS:
            _SESSION_SPECS[key] = load_plugin(resolved, name)
        return _SESSION_SPECS[key]

    def plugin(
        self,
        plugin: PluginSpec | type | str | Path,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> PluginRunner:
        """A runner for a plugin file, spec or class, with ``config`` validated by its Schema."""
        from kong_pdk.testing.kit.runner import PluginRunner

        if isinstance(plugin, (str, Path)):
            plugin = self.load(plugin)
        return PluginRunner(plugin, config, **options)


# A plugin file is imported once per session, so its class (and server) is reused.
_SESSION_SPECS: dict[Path, PluginSpec] = {}


@pytest.fixture
def kong(request: pytest.FixtureRequest) -> KongKit:
    """The plugin test kit (see ``kong_pdk.testing.kit.runner``)."""
    from kong_pdk.install_check import warn_if_mixed

    warn_if_mixed()
    if importlib.util.find_spec("msgpack") is None:
        pytest.fail(MISSING_EXTRA, pytrace=False)
    return KongKit(Path(str(request.node.fspath)).parent)
