"""Load a plugin file the way Kong's start command runs it, without serving it.

A plugin file (``examples/py-hello.py``) defines ``Plugin``, ``Schema``,
``version`` and ``priority`` at module level and ends with
``start_dedicated_server(...)`` under ``if __name__ == "__main__"``, so
importing it under another name defines the plugin without starting a server.
The plugin's name is the file name without ``.py`` (the name Kong knows it by,
``pluginserver_names``), unless given.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from kong_pdk.plugin_file import import_plugin_file

__all__ = ["PluginSpec", "load_plugin", "plugin_spec"]


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


def load_plugin(path: str | os.PathLike[str], name: str | None = None, *, class_name: str = "Plugin") -> PluginSpec:
    """Import ``path`` and describe its plugin (``Plugin``, ``Schema``, ``version``, ``priority``)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"no plugin file at {file}")
    module = import_plugin_file(file)
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
