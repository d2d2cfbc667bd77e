"""The plugin-info object Kong's query command reads (docs/protocol.md §1.4)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PHASES", "phases_of", "plugin_info", "schema_field_names", "BOOKKEEPING_KEYS"]

#: Phases an external plugin can implement, in Kong's order (docs/protocol.md §1.4).
PHASES: tuple[str, ...] = ("certificate", "rewrite", "access", "response", "preread", "log")

#: Keys Kong adds to ``Config`` next to the plugin's own fields (docs/protocol.md §6.5).
#: Keys starting with ``__`` are always removed as well.
BOOKKEEPING_KEYS: tuple[str, ...] = (
    "route_id",
    "service_id",
    "consumer_id",
    "plugin_instance_name",
)


def phases_of(plugin: type) -> list[str]:
    """The phase handlers a plugin class defines."""
    return [p for p in PHASES if callable(getattr(plugin, p, None))]


def _schema_fields(schema: Any) -> list[Any]:
    if schema is None:
        return []
    if isinstance(schema, Mapping):
        # A single mapping of name -> definition is accepted too.
        return [{k: v} for k, v in schema.items()]
    if isinstance(schema, Iterable) and not isinstance(schema, (str, bytes)):
        return list(schema)
    raise TypeError(f"Schema must be a list of {{name: definition}} maps, not {type(schema).__name__}")


def schema_field_names(schema: Any) -> set[str]:
    """Top-level config field names declared by the plugin's ``Schema``."""
    names: set[str] = set()
    for field in _schema_fields(schema):
        if isinstance(field, Mapping):
            names.update(str(k) for k in field)
    return names


def plugin_info(
    name: str, plugin: type, version: Any = None, priority: Any = 0, schema: Any = ()
) -> dict[str, Any]:
    """Builds ``{Name, Phases, Priority, Version, Schema}`` as Kong parses it.

    ``Version`` is never null and ``Priority`` is always an integer: Kong 3.x
    refuses a plugin otherwise (docs/protocol.md §1.4, §10 item 2).
    """
    if not inspect.isclass(plugin):
        raise TypeError(f"plugin must be a class, not {type(plugin).__name__}")
    try:
        prio = int(priority if priority is not None else 0)
    except (TypeError, ValueError):
        raise TypeError(f"priority must be an integer, not {priority!r}") from None
    return {
        "Name": name,
        "Phases": phases_of(plugin),
        "Priority": prio,
        "Version": str(version) if version not in (None, "") else "0.0.0",
        "Schema": {
            "name": name,
            "fields": [{"config": {"type": "record", "fields": _schema_fields(schema)}}],
        },
    }
