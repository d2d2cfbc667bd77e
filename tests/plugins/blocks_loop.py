"""A ``-g`` handler that blocks the gevent hub with a CPU loop (issue 17, point 6).

Under ``-g`` a ``time.sleep`` is patched to yield; code that computes never
does, and holds up every other event of the hub. The server must say so
(plugin, phase, the blocking line) and, with ``--handler-timeout``, fail the
event closed once the handler yields.
"""

import sys
import time

from kong_pdk.exception import EventAbandoned

Schema = ({"seconds": {"type": "number"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        end = time.monotonic() + float(self.config.get("seconds") or 1.5)
        while time.monotonic() < end: pass  # BLOCKS THE LOOP  # noqa: E701
        try:
            kong.response.set_header("x-after", "yes")
        except EventAbandoned:
            print("blocks-loop: EventAbandoned after the block", file=sys.stderr, flush=True)
            raise


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("blocks_loop", Plugin, version, priority, Schema)
