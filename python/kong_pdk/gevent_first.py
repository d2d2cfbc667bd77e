"""``python -m kong_pdk.gevent_first PLUGIN.py ARGS...``: the plugin file, with gevent's patching first.

Under ``-g`` blocking I/O must be gevent's. A plugin file imports what it needs
(``requests``, ``ssl`` …) at its top, before ``start_dedicated_server`` can see
``-g``; patching then is too late: gevent warns (``MonkeyPatchWarning``) and
modules that took references to the originals keep blocking the hub. So
``start_dedicated_server`` replaces the process (``exec``, same pid, which Kong
watches) with this module, which patches before anything else and then runs
the plugin file as ``__main__`` with the same arguments.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    plugin = sys.argv[1]
    sys.argv = [plugin, *sys.argv[2:]]
    # As if the file had been run directly: its folder first on the import path.
    sys.path[0] = os.path.dirname(os.path.abspath(plugin))
    runpy.run_path(plugin, run_name="__main__")


if __name__ == "__main__":
    main()
