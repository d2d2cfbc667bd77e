"""Kept for the documented ``kong_pdk.testing.loader.load_plugin``; see ``kong_pdk.testing.kit.loader``."""

from __future__ import annotations

from kong_pdk.testing.kit.loader import PluginSpec, load_plugin, plugin_spec

__all__ = ["PluginSpec", "load_plugin", "plugin_spec"]
