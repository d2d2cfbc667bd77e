"""Mistakes in a plugin file that Kong and the server would otherwise accept silently.

* a method whose name is a near miss of a phase (``acces``): Kong never calls
  it, and the plugin seems to do nothing;
* ``Schema`` written as one dict instead of a sequence of ``{name: definition}``
  maps: the server accepts it, but the official package and Kong's own
  ``fields`` format do not, so the plugin is not portable and the intent is
  unclear;
* no ``version``: Kong shows ``0.0.0``.

``plugin_mistakes`` only describes them; the command line prints them on
stderr (stdout carries only the dump), the test kit raises them as
``PluginWarning`` so that a test sees them.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Mapping
from typing import Any

from kong_pdk.plugin_info import PHASES

__all__ = ["PluginWarning", "plugin_mistakes", "warn_plugin_mistakes", "MISSING"]


class PluginWarning(UserWarning):
    """A plugin file has a mistake that would otherwise pass silently."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: ``version`` when the plugin file does not define it at all.
MISSING: Any = _Missing()


def _misspelt_phases(plugin: type) -> list[str]:
    found = []
    for cls in inspect.getmro(plugin):
        if cls is object:
            continue
        for name, value in vars(cls).items():
            if name.startswith("_") or name in PHASES or not callable(value):
                continue
            close = difflib.get_close_matches(name.lower(), PHASES, n=1, cutoff=0.8)
            if close:
                found.append(
                    f"{plugin.__name__}.{name} looks like a misspelt phase: Kong only calls "
                    f"{', '.join(PHASES)}; did you mean {close[0]}?"
                )
    return found


def plugin_mistakes(plugin: type, version: Any = MISSING, schema: Any = ()) -> list[str]:
    """One sentence per mistake found in ``plugin`` and its module-level facts.

    ``version`` is ``MISSING`` when the file defines none (``None`` counts as
    missing too).
    """
    found = _misspelt_phases(plugin)
    if isinstance(schema, Mapping):
        found.append(
            "Schema is a dict; Kong's format is a sequence of {name: definition} maps, "
            'one per field: Schema = ({"field": {"type": "string"}},)'
        )
    if version is MISSING or version in (None, ""):
        found.append('no version: Kong will show "0.0.0"; set e.g. version = "0.1.0" in the plugin file')
    return found


def warn_plugin_mistakes(plugin: type, version: Any = MISSING, schema: Any = (), stacklevel: int = 2) -> list[str]:
    """Raises each mistake as a ``PluginWarning``; returns them."""
    found = plugin_mistakes(plugin, version, schema)
    for message in found:
        warnings.warn(message, PluginWarning, stacklevel=stacklevel + 1)
    return found
