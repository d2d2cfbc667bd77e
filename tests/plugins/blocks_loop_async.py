"""An ``async def`` handler that blocks its event loop (issue 17, point 6).

``time.sleep`` in an ``async def`` phase holds up every other event of the
loop; the server must say so (plugin, phase, the blocking line) and, with
``--handler-timeout``, fail the event closed once the handler yields. With
``{"await": true}`` the handler awaits instead (the loop turns): past
``--handler-timeout`` its event fails closed all the same.
"""

import asyncio
import sys
import time

from kong_pdk.exception import EventAbandoned

Schema = ({"seconds": {"type": "number"}}, {"await": {"type": "boolean"}})
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        seconds = float(self.config.get("seconds") or 1.5)
        if self.config.get("await"):
            await asyncio.sleep(seconds)
        else:
            time.sleep(seconds)  # BLOCKS THE LOOP
        try:
            await kong.response.set_header("x-after", "yes")
        except EventAbandoned:
            print("blocks-loop: EventAbandoned after the block", file=sys.stderr, flush=True)
            raise


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("blocks_loop_async", Plugin, version, priority, Schema)
