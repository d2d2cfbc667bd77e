"""The Kong version the emulator plays, and what Kong's side does differently by version.

``KongEmulator(kong_version="3.4")`` takes ``"3.4"``, ``"3.4.2"`` or ``(3, 4)``;
the default is the latest Kong we follow, 3.9. Differences from Kong's Lua
(``kong/runloop/plugin_servers/*.lua`` at the 3.4.x, 3.5.0, 3.6.x, 3.8.x and
3.9.x tags) and docs/protocol.md §1.4, §6.5, §7.3, §9:

| what | 2.x | 3.0 – 3.4 | 3.5 | 3.6 | 3.7 – 3.8 | 3.9+ |
|---|---|---|---|---|---|---|
| cached ids forgotten on "no plugin instance" | that row | that row | every instance on the server's socket | every instance of the plugin | same | same |
| ... also on any other RPC error | no | no | yes | yes | no | no |
| plugins registered from the query output | all | all | all | all | all | the first |
| ``__seq__`` | per worker, from 0 | same | same | shared, from 1 | same | same |
| PDK results | all returned, ``StepError`` | first only | same | same | same | same |

The query output may be an array of plugin infos or ``{"Protocol", "Plugins"}``
in every version (``query``); bookkeeping keys of ``Config`` are in
``instance_config``.
"""

from __future__ import annotations

import re
from typing import Final, Literal

__all__ = [
    "KongVersion",
    "KongVersionLike",
    "LATEST",
    "parse_kong_version",
    "reset_scope",
    "resets_on_any_error",
    "registers_only_the_first_plugin",
]

KongVersion = tuple[int, int]
KongVersionLike = str | tuple[int, int]

LATEST: Final[KongVersion] = (3, 9)

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)*")


def parse_kong_version(version: KongVersionLike) -> KongVersion:
    """``"3.4"``, ``"3.4.2"`` or ``(3, 4)`` as ``(major, minor)``."""
    if isinstance(version, str):
        match = _VERSION.fullmatch(version.strip())
        if match is None:
            raise ValueError(f"kong_version must look like '3.4' or '3.4.2', not {version!r}")
        return int(match.group(1)), int(match.group(2))
    if (
        isinstance(version, tuple)
        and len(version) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in version)
    ):
        return version[0], version[1]
    raise ValueError(f"kong_version must be a string such as '3.4' or a (major, minor) tuple, not {version!r}")


ResetScope = Literal["row", "server", "plugin"]


def reset_scope(version: KongVersion) -> ResetScope:
    """Which cached instance ids Kong forgets after an error that resets them.

    * ``row`` (<= 3.4): only the failing plugin row's entry (``reset_instance``
      drops ``running_instances[key]``);
    * ``server`` (3.5): every entry whose RPC object is that of the failing one,
      i.e. every instance on that plugin server's socket;
    * ``plugin`` (3.6+): every entry of that plugin name
      (``reset_instances_for_plugin``), in every worker.
    """
    if version < (3, 5):
        return "row"
    if version < (3, 6):
        return "server"
    return "plugin"


def resets_on_any_error(version: KongVersion) -> bool:
    """3.5 and 3.6 post the reset event on every RPC error, not only "no plugin instance"."""
    return (3, 5) <= version < (3, 7)


def registers_only_the_first_plugin(version: KongVersion) -> bool:
    """3.9+ keeps only the first plugin info of a query output; earlier ones register all."""
    return version >= (3, 9)
