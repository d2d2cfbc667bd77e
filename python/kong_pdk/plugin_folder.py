"""The plugins of a folder, as ``kong-python-pluginserver -d DIR`` serves them.

Every ``*.py`` file directly in the folder is one plugin, named after the file
(``py-hello.py`` is the plugin ``py-hello``, the name Kong's ``plugins =``
lists), and defines ``Plugin``, ``Schema``, ``version`` and ``priority`` as a
dedicated plugin file does. Files whose name starts with ``_`` or ``.`` are
helpers, not plugins; the folder is on the import path, so plugins can import
them.

A file that cannot be loaded (it raises on import, or defines no ``Plugin``
class) costs only its own plugin, as with the official package: the others
are served and dumped, and the server logs the broken file at error level
with its traceback. ``--strict`` makes it an error instead (for CI: Kong
registers whatever the query command prints, and a plugin missing from that
list only shows up as "plugin not enabled" later, docs/protocol.md §1.4).
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from kong_pdk.plugin_check import MISSING, plugin_mistakes
from kong_pdk.plugin_file import import_plugin_file
from kong_pdk.serve import PluginDefinition

__all__ = ["PluginLoadError", "LoadedPlugin", "FolderLoad", "plugin_files", "load_plugin_file", "load_folder"]


class PluginLoadError(Exception):
    """A plugin file of the folder cannot be loaded; the message names the file.

    ``details`` is the traceback of the import, when there was one.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class LoadedPlugin:
    """One plugin of the folder: what the server needs, and its silent mistakes."""

    definition: PluginDefinition
    path: Path
    mistakes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.definition.name


def plugin_files(directory: Path) -> list[Path]:
    """The plugin files of ``directory``, sorted by name."""
    if not directory.is_dir():
        raise PluginLoadError(f"plugins directory {str(directory)!r} does not exist")
    return sorted(
        p for p in directory.iterdir() if p.suffix == ".py" and p.is_file() and not p.name.startswith(("_", "."))
    )


def load_plugin_file(path: Path) -> LoadedPlugin:
    """Imports one plugin file of the folder (the folder first on the import path)."""
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = import_plugin_file(path.resolve())
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a file that exits when imported is broken
        raise PluginLoadError(
            f"cannot load plugin file {path}: {type(e).__name__}: {e}", _traceback_from(e, path)
        ) from None
    cls = getattr(module, "Plugin", None)
    if not isinstance(cls, type):
        raise PluginLoadError(
            f"plugin file {path} defines no Plugin class (a helper module's name must start with '_')"
        )
    version = getattr(module, "version", MISSING)
    schema = getattr(module, "Schema", ())
    definition = PluginDefinition(
        name=path.stem,
        cls=cls,
        version=None if version is MISSING else version,
        priority=getattr(module, "priority", 0),
        schema=schema,
    )
    return LoadedPlugin(definition, path, plugin_mistakes(cls, version, schema))


def _traceback_from(e: BaseException, path: Path) -> str:
    """The traceback from the plugin file's own frame on (the importing frames are noise)."""
    tb = e.__traceback__
    own = str(path.resolve())
    while tb is not None and tb.tb_frame.f_code.co_filename != own:
        tb = tb.tb_next
    if tb is None:  # never ran (a SyntaxError): the error shows the file's line itself
        return "".join(traceback.format_exception_only(type(e), e))
    return "".join(traceback.format_exception(type(e), e, tb))


@dataclass(frozen=True)
class FolderLoad:
    """The plugins of a folder that loaded, and the errors of those that did not."""

    plugins: list[LoadedPlugin]
    broken: list[PluginLoadError]


def load_folder(directory: Path) -> FolderLoad:
    """Every plugin file of ``directory``, each loaded on its own: one that
    fails is in ``broken`` and costs no other. A folder without plugin files
    raises ``PluginLoadError``."""
    files = plugin_files(directory)
    if not files:
        raise PluginLoadError(f"no plugin file (*.py) in {str(directory)!r}")
    plugins: list[LoadedPlugin] = []
    broken: list[PluginLoadError] = []
    for path in files:
        try:
            plugins.append(load_plugin_file(path))
        except PluginLoadError as e:
            broken.append(e)
    return FolderLoad(plugins, broken)
