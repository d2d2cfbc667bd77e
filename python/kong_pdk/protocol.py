"""Which plugin wire a plugin is served on: MsgPack:1 (Kong's default) or ProtoBuf:1.

Kong reads the wire from the dump's ``Protocol`` field and speaks it on the
plugin's socket (docs/protobuf.md). A plugin file chooses ProtoBuf:1 with a
module attribute next to ``version`` and ``priority``::

    protocol = "protobuf"

or the server's ``--protocol protobuf`` flag (which must then be in both of
Kong's commands, the query and the start one; the attribute cannot be
forgotten in one of them). The flag wins over the attribute.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["MSGPACK", "PROTOBUF", "normalize", "protocol_of", "dump_name", "query_output", "protobuf_functions"]

MSGPACK = "msgpack"
PROTOBUF = "protobuf"

_NAMES = {"msgpack": MSGPACK, "msgpack:1": MSGPACK, "protobuf": PROTOBUF, "protobuf:1": PROTOBUF}


def normalize(value: object) -> str:
    """``msgpack`` or ``protobuf`` for any accepted spelling; ValueError otherwise."""
    name = _NAMES.get(str(value).lower()) if isinstance(value, str) else None
    if name is None:
        raise ValueError(f"protocol must be 'msgpack' or 'protobuf' (or 'MsgPack:1', 'ProtoBuf:1'), not {value!r}")
    return name


def protocol_of(plugin: type, flag: str | None = None) -> str:
    """The wire of ``plugin``: the ``--protocol`` flag, else its module's (or class's) ``protocol``."""
    if flag is not None:
        return normalize(flag)
    choice: Any = getattr(plugin, "protocol", None)
    if choice is None:
        module = sys.modules.get(plugin.__module__)
        choice = getattr(module, "protocol", None)
    return MSGPACK if choice is None else normalize(choice)


def dump_name(protocol: str) -> str:
    """The dump's spelling: ``MsgPack:1`` / ``ProtoBuf:1``."""
    return "ProtoBuf:1" if normalize(protocol) == PROTOBUF else "MsgPack:1"


def query_output(infos: list[dict[str, Any]], protocol: str) -> object:
    """What the query command prints (docs/protocol.md §1.4): the list of plugin
    infos for MsgPack:1, as always; for ProtoBuf:1 the object form, as Kong reads
    the wire only from its top-level ``Protocol`` (``{"Protocol": "ProtoBuf:1",
    "Plugins": [...]}``, what go-pdk prints)."""
    if normalize(protocol) == PROTOBUF:
        return {"Protocol": dump_name(PROTOBUF), "Plugins": infos}
    return infos


@cache
def protobuf_functions() -> frozenset[str]:
    """The PDK functions ProtoBuf:1 has (``"protobuf"`` in pdk-api.json; 74)."""
    data = json.loads((Path(__file__).parent / "pdk" / "pdk-api.json").read_text(encoding="utf-8"))
    return frozenset(f["name"] for f in data["functions"] if f.get("protobuf"))
