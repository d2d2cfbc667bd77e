"""Write Kong Gateway plugins in Python, served by a native (Rust) plugin server."""

from __future__ import annotations

from kong_pdk._core import __version__
from kong_pdk.exception import PDKException, PluginExit, PluginServerException

__all__ = ["__version__", "PDKException", "PluginExit", "PluginServerException"]
