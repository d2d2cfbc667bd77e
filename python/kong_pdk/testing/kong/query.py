"""What Kong makes of a plugin server's query command output (docs/protocol.md §1.4).

Kong runs the query command (``--dump``), reads all of stdout and decodes it as
JSON. Every version accepts two shapes: an array of plugin infos, or an object
``{"Protocol": ..., "Plugins": [...]}`` (the protocol defaults to ``MsgPack:1``).
Kong 3.8 and earlier register every plugin info in the list, logging and
skipping a name already registered; 3.9+ registers only the first one (each
``pluginserver_names`` entry stands for one plugin).

Anything that is not a JSON array or object, or a plugin info that is not an
object with a string ``Name``, is an error Kong raises while loading plugins;
here a ``KongProtocolError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from kong_pdk.testing.kong.errors import KongProtocolError
from kong_pdk.testing.kong.versions import KongVersion, registers_only_the_first_plugin

__all__ = ["QueryResult", "read_query_output", "DEFAULT_PROTOCOL"]

DEFAULT_PROTOCOL = "MsgPack:1"


@dataclass(frozen=True)
class QueryResult:
    """The protocol and the plugin infos Kong registers, in order, with its log lines."""

    protocol: str
    plugins: list[Mapping[str, object]]
    log: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [str(info["Name"]) for info in self.plugins]


def read_query_output(output: str | bytes, kong_version: KongVersion) -> QueryResult:
    try:
        dump = json.loads(output)
    except ValueError as exc:
        raise KongProtocolError(f"the query output is not JSON (Kong's cjson refuses it): {exc}") from exc
    if not isinstance(dump, (list, dict)):
        raise KongProtocolError(f"not a plugin info table: {dump!r}")
    protocol = DEFAULT_PROTOCOL
    infos: object = dump
    if isinstance(dump, dict):
        protocol = str(dump.get("Protocol") or DEFAULT_PROTOCOL)
        if dump.get("Plugins") is not None:
            infos = dump["Plugins"]
    # ``ipairs``/``[1]`` see only an array's elements; an object has none.
    listed = infos if isinstance(infos, list) else []
    if registers_only_the_first_plugin(kong_version):
        if not listed:
            raise KongProtocolError("the query output lists no plugin (Kong 3.9+ indexes its first entry)")
        return QueryResult(protocol, [_plugin_info(listed[0])])
    registered: dict[str, Mapping[str, object]] = {}
    log: list[str] = []
    for item in listed:
        info = _plugin_info(item)
        name = str(info["Name"])
        if name in registered:
            log.append(f"Duplicate plugin name [{name}]")
            continue
        registered[name] = info
    return QueryResult(protocol, list(registered.values()), log)


def _plugin_info(item: object) -> Mapping[str, object]:
    if not isinstance(item, Mapping) or not isinstance(item.get("Name"), str):
        raise KongProtocolError(f"a plugin info must be an object with a string Name, got {item!r}")
    return item
