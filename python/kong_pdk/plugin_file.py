"""Importing a plugin file the way Kong's start command runs it, without serving it.

A plugin file defines ``Plugin``, ``Schema``, ``version`` and ``priority`` at
module level and starts its server under ``if __name__ == "__main__"``, so
importing it under another name defines the plugin and nothing else. Used by
``kong-pdk check`` and the test kit's loader; needs nothing beyond the base
package.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_plugin_file"]

_counter = itertools.count()


def import_plugin_file(path: Path) -> ModuleType:
    """Imports ``path`` under a private module name (registered in ``sys.modules``)."""
    module_name = f"_kong_pdk_plugin_{path.stem.replace('-', '_')}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import a plugin from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
