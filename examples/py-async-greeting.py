#!/usr/bin/env python3
"""Async greeting: ``async def`` phases that await the PDK and other I/O.

``access`` awaits ``kong.request.get_header`` and an ``asyncio.sleep`` (a
stand-in for a call to another service); while it waits, the handlers of other
requests run on the same event loop. ``log`` is async too and logs the greeting
it finds in ``kong.ctx.shared``. No flag is needed: the server runs ``async
def`` phases on its asyncio loop by itself.
"""

import asyncio
from typing import Any

import kong_pdk.pdk.kong as kong

Schema = (
    {"message": {"type": "string", "default": "hello"}},
    {"delay_ms": {"type": "integer", "default": 0, "between": [0, 5000]}},
)

version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.message = str(config.get("message") or "hello")
        self.delay = int(config.get("delay_ms") or 0) / 1000

    async def access(self, kong: kong.AsyncLuaStyleKong) -> None:
        host, err = await kong.request.get_header("host")
        if err is not None or host is None:
            kong.response.exit(400, {"message": "a host header is needed"})
        await asyncio.sleep(self.delay)
        greeting = f"{self.message}, {host}"
        await kong.response.set_header("x-greeting", greeting)
        await kong.ctx.shared.set("greeting", greeting)

    async def log(self, kong: kong.AsyncLuaStyleKong) -> None:
        greeting, _ = await kong.ctx.shared.get("greeting")
        await kong.log.notice("greeted: ", greeting)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-async-greeting", Plugin, version, priority, Schema)
