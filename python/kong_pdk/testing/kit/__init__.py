"""The plugin test kit: a plugin file served for real, driven through simulated requests.

``PluginRunner`` (``runner``) serves the plugin in-process (``servers``), plays
Kong with ``kong_pdk.testing.kong`` over the socket and answers PDK calls from
``kong_pdk.testing.fake``; a run returns a ``Result`` (``request_result``).
``loader`` imports plugin files, ``schema`` validates configs like Kong's Admin
API, ``upstream`` builds what Kong sends upstream. See docs/testing.md.
"""

from __future__ import annotations

from kong_pdk.testing.kit.loader import PluginSpec, load_plugin, plugin_spec
from kong_pdk.testing.kit.request_result import Call, KitFailure, Result
from kong_pdk.testing.kit.runner import HTTP_PHASES, PluginRunner
from kong_pdk.testing.kit.schema import ConfigError

__all__ = [
    "Call",
    "ConfigError",
    "HTTP_PHASES",
    "KitFailure",
    "PluginRunner",
    "PluginSpec",
    "Result",
    "load_plugin",
    "plugin_spec",
]
