"""``python -m kong_pdk.reload_check PLUGIN.py``: does this version of a plugin file load?

Run by the ``--reload`` supervisor (``kong_pdk.reload``) before it starts a new
server on a changed file: the file runs as ``PLUGIN.py --dump`` would (so a
syntax error, a failing import or a broken plugin class shows up here, with its
traceback on stderr and a non-zero exit status), and then the local modules it
imported are printed as a JSON list on stdout: the files the supervisor watches
next.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys

__all__ = ["local_modules"]

# Installed packages are not the plugin's own code, even inside its folder
# (a virtualenv next to the plugin).
_INSTALLED = ("site-packages", "dist-packages")


def local_modules(plugin_file: str) -> list[str]:
    """The plugin file and the modules loaded from its folder or below.

    Installed packages and ``kong_pdk`` itself are left out, even when they sit
    under that folder (a virtualenv, a checkout of this project).
    """
    folder = os.path.dirname(os.path.abspath(plugin_file))
    own = os.path.dirname(os.path.abspath(__file__)) + os.sep
    found = {os.path.abspath(plugin_file)}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        path = os.path.abspath(path)
        parts = path.split(os.sep)
        if path.startswith(folder + os.sep) and not path.startswith(own) and not any(p in _INSTALLED for p in parts):
            found.add(path)
    return sorted(found)


def main() -> None:
    plugin = os.path.abspath(sys.argv[1])
    sys.argv = [plugin, "--dump"]
    # As if the file had been run directly: its folder first on the import path.
    sys.path[0] = os.path.dirname(plugin)
    status: object = 0
    with contextlib.redirect_stdout(io.StringIO()):  # the dump itself is not needed
        try:
            runpy.run_path(plugin, run_name="__main__")
        except SystemExit as stop:
            status = stop.code
    if status not in (0, None):
        raise SystemExit(status)
    print(json.dumps(local_modules(plugin)))


if __name__ == "__main__":
    main()
