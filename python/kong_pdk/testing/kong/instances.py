"""Kong's per-worker cache of instance ids (docs/protocol.md §7.2, §7.3).

Kong keys the cache by the plugin row id [3.3+] and starts an instance lazily on the
first event. A new config (a new ``conf`` table, so a new ``__seq__``) makes the next
event start a new instance, store its id, and only then close the old one. While one
caller starts an instance for a key, others for the same key wait (Kong's "claim").

After an error containing "no plugin instance" Kong forgets ids: that key only (<= 3.4),
every entry on the same server (3.5), or every entry of that plugin name (3.6+); see
``versions.reset_scope``. It never calls CloseInstance for them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CachedInstance", "InstanceCache"]


@dataclass(frozen=True)
class CachedInstance:
    plugin_name: str
    plugin_id: str
    instance_id: int
    seq: int
    config: Mapping[str, object]


class InstanceCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, CachedInstance] = {}
        self._claims: dict[str, threading.Lock] = {}

    def claim(self, key: str) -> threading.Lock:
        """The lock that serialises starting an instance for ``key``."""
        with self._lock:
            return self._claims.setdefault(key, threading.Lock())

    def get(self, key: str) -> CachedInstance | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, entry: CachedInstance) -> None:
        with self._lock:
            self._entries[key] = entry

    def forget(self, *, key: str | None = None, plugin_name: str | None = None) -> list[CachedInstance]:
        """Drop entries by key, by plugin name, or all of them (both None)."""
        with self._lock:
            doomed = [
                k
                for k, e in self._entries.items()
                if (key is None or k == key) and (plugin_name is None or e.plugin_name == plugin_name)
            ]
            return [self._entries.pop(k) for k in doomed]

    def snapshot(self) -> dict[str, CachedInstance]:
        with self._lock:
            return dict(self._entries)
