"""The ``Config`` string of ``plugin.StartInstance`` as Kong builds it (docs/protocol.md §6.5).

Kong sends ``cjson.encode(conf)``: a JSON **text** inside a msgpack string, where
``conf`` is the plugin row's config plus bookkeeping keys Kong adds to that same table:

| key | since |
|---|---|
| ``route_id``, ``service_id``, ``consumer_id`` (only when the row is scoped) | 2.x |
| ``__key__`` (the row's cache key) and ``__seq__`` (config generation) | 2.x |
| ``plugin_instance_name`` (null when unset) and ``__plugin_id`` | 3.x |
| ``__ws_id`` | 3.9 |
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.lua import NULL

__all__ = ["Bookkeeping", "build_config", "DEFAULT_WS_ID", "default_plugin_id"]

# A stable stand-in for the id of Kong's "default" workspace.
DEFAULT_WS_ID: Final = str(uuid.uuid5(uuid.NAMESPACE_URL, "kong_pdk.testing/workspace/default"))


def default_plugin_id(plugin_name: str) -> str:
    """A stable plugin row id for a plugin name, for tests that do not care."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kong_pdk.testing/plugin/{plugin_name}"))


@dataclass(frozen=True)
class Bookkeeping:
    """The row facts Kong adds to ``conf``. ``extra`` is merged last (None removes a key)."""

    plugin_id: str
    seq: int
    route_id: str | None = None
    service_id: str | None = None
    consumer_id: str | None = None
    instance_name: str | None = None
    ws_id: str = DEFAULT_WS_ID
    key: str | None = None
    extra: Mapping[str, object] | None = None


def build_config(
    name: str,
    config: Mapping[str, object],
    book: Bookkeeping,
    kong_version: tuple[int, int],
) -> str:
    """``cjson.encode(conf)`` for this config and row on this Kong version."""
    conf: dict[str, object] = dict(config)
    for scope, value in (
        ("route_id", book.route_id),
        ("service_id", book.service_id),
        ("consumer_id", book.consumer_id),
    ):
        if value is not None:
            conf[scope] = value
    conf["__key__"] = book.key if book.key is not None else _cache_key(name, book)
    conf["__seq__"] = book.seq
    if kong_version >= (3, 0):
        conf["plugin_instance_name"] = book.instance_name if book.instance_name is not None else NULL
        conf["__plugin_id"] = book.plugin_id
    if kong_version >= (3, 9):
        conf["__ws_id"] = book.ws_id
    if book.extra:
        for k, v in book.extra.items():
            if v is None:
                conf.pop(k, None)
            else:
                conf[k] = v
    return cjson_encode(conf)


def _cache_key(name: str, book: Bookkeeping) -> str:
    # The shape Kong uses, plugins:<name>:<route>:<service>:<consumer>::<ws>; opaque to servers.
    parts = (book.route_id or "", book.service_id or "", book.consumer_id or "")
    return f"plugins:{name}:{parts[0]}:{parts[1]}:{parts[2]}::{book.ws_id}"
