"""Load a plugin file the way Kong's start command runs it, without serving it.

A plugin file (``examples/py-hello.py``) defines ``Plugin``, ``Schema``,
``version`` and ``priority`` at module level and ends with
``start_dedicated_server(...)`` under ``if __name__ == "__main__"``, so
importing it under another name defines the plugin without starting a server.
The plugin's name is the file name without ``.py`` (the name Kong knows it by,
``pluginserver_names``), unless given.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["PluginSpec", "load_plugin", "plugin_spec"]

_counter = itertools.count()


@dataclass(frozen=True)
class PluginSpec:
    """What Kong knows about a plugin: its name, class, version, priority and schema."""

    name: str
    cls: type
    version: str = "0.0.0"
    priority: int = 0
    schema: Any = ()
    path: Path | None = None
    module: ModuleType | None = field(default=None, compare=False, repr=False)


def _import_file(path: Path) -> ModuleType:
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


def load_plugin(path: str | os.PathLike[str], name: str | None = None, *, class_name: str = "Plugin") -> PluginSpec:
    """Import ``path`` and describe its plugin (``Plugin``, ``Schema``, ``version``, ``priority``)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no plugin file at {file}")
    module = _import_file(file)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise TypeError(f"{file} defines no class {class_name!r}")
    return PluginSpec(
        name=name or file.stem,
        cls=cls,
        version=str(getattr(module, "version", None) or "0.0.0"),
        priority=int(getattr(module, "priority", 0) or 0),
        schema=getattr(module, "Schema", ()),
        path=file,
        module=module,
    )


def plugin_spec(
    cls: type,
    name: str | None = None,
    *,
    schema: Any = None,
    version: str | None = None,
    priority: int | None = None,
) -> PluginSpec:
    """Describe a plugin class; missing facts come from the class's module, as in a plugin file."""
    module = sys.modules.get(cls.__module__)
    return PluginSpec(
        name=name or cls.__name__.lower(),
        cls=cls,
        version=str(version or getattr(module, "version", None) or "0.0.0"),
        priority=int(priority if priority is not None else getattr(module, "priority", 0) or 0),
        schema=schema if schema is not None else getattr(module, "Schema", ()),
        module=module,
    )
