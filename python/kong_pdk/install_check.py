"""Notices when the official ``kong-pdk`` package is installed over this one.

Both distributions install the import package ``kong_pdk`` (ours is
distributed as ``kong-pdk-native`` so that it stays a drop-in replacement), so
installing one after the other in the same environment mixes their files: the
second overwrites the first's modules of the same name and leaves the rest.
Such a mix fails in confusing ways (the official ``pdk/kong/nginx/`` package,
for one, shadows our ``pdk/kong/nginx.py``), so at import we look for what only
the official package installs and say what to do. The check costs a few
``stat`` calls and one directory listing.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["MixedInstallWarning", "OFFICIAL_ONLY_FILES", "foreign_files", "warn_if_mixed"]

#: Files of the official package (0.36) that kong-pdk-native never ships.
OFFICIAL_ONLY_FILES: tuple[str, ...] = (
    "listener.py",
    "server.py",
    "module.py",
    "const.py",
    "logger.py",
    "kong.py",
    "pdk/kong/log.py",
    "pdk/kong/nginx/__init__.py",
)

FIX = "pip uninstall -y kong-pdk kong-pdk-native && pip install kong-pdk-native"


class MixedInstallWarning(UserWarning):
    """The official ``kong-pdk`` package's files are mixed into this install."""


def _official_dist_infos(site_dir: str) -> list[str]:
    """``kong_pdk-*.dist-info`` folders next to the package whose RECORD lists official-only files."""
    try:
        names = os.listdir(site_dir)
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.startswith(("kong_pdk-", "kong-pdk-")) and name.endswith(".dist-info")):
            continue
        try:
            with open(os.path.join(site_dir, name, "RECORD"), encoding="utf-8") as f:
                record = f.read()
        except OSError:
            continue
        if any(f"kong_pdk/{rel}," in record for rel in OFFICIAL_ONLY_FILES):
            found.append(name)
    return found


def foreign_files(package_dir: str) -> list[str]:
    """What of the official package is in (or next to) ``package_dir``, relative to its parent."""
    found = [f"kong_pdk/{rel}" for rel in OFFICIAL_ONLY_FILES if os.path.exists(os.path.join(package_dir, rel))]
    return found + _official_dist_infos(os.path.dirname(os.path.abspath(package_dir)))


_checked: set[str] = set()


def warn_if_mixed(package_dir: str | None = None, stacklevel: int = 2) -> list[str]:
    """Warns (``MixedInstallWarning``, once per folder) when the official package is mixed in.

    Called by ``import kong_pdk`` and again by the ``kong-pdk`` command and the
    kit's fixture, which still run when the official package's (empty)
    ``__init__.py`` has replaced ours. Returns what was found.
    """
    folder = package_dir or os.path.dirname(os.path.abspath(__file__))
    found = foreign_files(folder)
    if found and folder not in _checked:
        _checked.add(folder)
        warnings.warn(
            f"the official 'kong-pdk' package is installed in the same place as 'kong-pdk-native' "
            f"({os.path.dirname(folder)}: {', '.join(found)}); both provide the import package kong_pdk "
            f"and their files are now mixed, so plugins may run the wrong code. Fix: {FIX}",
            MixedInstallWarning,
            stacklevel=stacklevel,
        )
    return found
