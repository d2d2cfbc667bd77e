"""Write Kong Gateway plugins in Python, served by a native (Rust) plugin server.

Distributed as ``kong-pdk-native`` (``pip install kong-pdk-native``); the
import package is ``kong_pdk``, as in the official package it replaces.
"""

from __future__ import annotations

from kong_pdk.install_check import warn_if_mixed

# Before the extension: a mixed install may fail to load it, and this says why.
warn_if_mixed(stacklevel=2)

from kong_pdk._core import __version__  # noqa: E402
from kong_pdk.exception import PDKException, PluginExit, PluginServerException  # noqa: E402

__all__ = ["__version__", "PDKException", "PluginExit", "PluginServerException"]
