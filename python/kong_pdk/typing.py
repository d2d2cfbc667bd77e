"""Types for what a plugin file declares next to its ``Plugin`` class.

    from kong_pdk.typing import PluginConfig, PluginSchema, Priority, Version

    Schema: PluginSchema = ({"message": {"type": "string", "default": "hello"}},)
    version: Version = "0.1.0"
    priority: Priority = 0


    class Plugin:
        def __init__(self, config: PluginConfig) -> None: ...

The annotations let a strict type checker accept schemas whose literals it
could not infer (``"default": []``) and catch a ``Schema`` of the wrong shape.
The handler's ``kong`` argument is typed by ``kong_pdk.pdk.kong``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

__all__ = ["FieldDefinition", "PluginSchema", "Version", "Priority", "PluginConfig"]

#: One field's definition in Kong's schema language (``{"type": "string", "required": True}``).
FieldDefinition: TypeAlias = Mapping[str, Any]

#: The plugin's ``Schema``: its config fields in order, one ``{name: definition}`` map each.
PluginSchema: TypeAlias = Sequence[Mapping[str, FieldDefinition]]

#: The plugin's ``version``, as Kong shows it.
Version: TypeAlias = str

#: The plugin's ``priority``: plugins with a higher one run first in a phase.
Priority: TypeAlias = int

#: The config a ``Plugin`` is created with (validated by Kong against ``Schema``).
PluginConfig: TypeAlias = dict[str, Any]
