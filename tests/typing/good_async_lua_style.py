"""An async plugin in lua style, checked by mypy --strict and basedpyright.

``async def`` handlers, annotated with ``kong.AsyncLuaStyleKong``, get the PDK
as awaitables: every call is awaited and gives ``(value, err)``. The exception is
``kong.response.exit`` / ``kong.response.error``: calling them ends the handler,
so they are not awaited, and the type checker knows nothing after them runs. A
plain ``def`` handler in the same plugin gets the sync PDK (``kong.kong``).

mypy runs with ``unused-awaitable`` (tests/typing/mypy.ini), so a call whose
``await`` is missing would be an error here. As in good_lua_style.py there is no
``from __future__ import annotations``: the annotations are evaluated at import.
"""

import asyncio
import json
from typing import Any

import kong_pdk.pdk.kong as kong

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


async def bearer_token(kong: kong.AsyncLuaStyleKong) -> str:
    """The bearer token of the request, or the request ends with a 401."""
    auth, err = await kong.request.get_header("authorization")
    if err is not None or auth is None or not auth.startswith("Bearer "):
        # exit ends the handler when called (no await), so below this line auth is a str.
        kong.response.exit(401, {"message": "missing token"}, {"WWW-Authenticate": "Bearer"})
    return auth.removeprefix("Bearer ")


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        # Plugin-wide state shared by the handlers running concurrently on the loop.
        self.lock = asyncio.Lock()
        self.seen_hosts: set[str] = set()

    async def access(self, kong: kong.AsyncLuaStyleKong) -> None:
        host, err = await kong.request.get_header("host")
        if err or host is None:
            await kong.log.err("could not read the host header: ", err)
            return
        message = str(self.config.get("message", "hello"))
        await kong.response.set_header("x-hello-from-python", f"Python says {message} to {host}")
        async with self.lock:
            first_visit = host not in self.seen_hosts
            self.seen_hosts.add(host)
        await kong.response.set_header("x-first-visit", first_visit)

        headers, _ = await kong.request.get_headers()
        accept: list[str] = headers.get("accept", [])
        token = await bearer_token(kong)
        await kong.log("accept: ", accept, " token length: ", len(token))
        await kong.log.inspect({"headers": headers})

        body, err = await kong.request.get_raw_body()
        if err is None and body.startswith(b"{"):
            await kong.service.request.set_raw_body(body.upper())
        await kong.service.request.set_headers({"x-seen": "1", "x-count": 2, "x-many": ["a", "b"]})
        await kong.ctx.shared.set("host", host)

        consumer, _ = await kong.client.get_consumer()
        if consumer is None:
            kong.response.error(403, "no consumer")
        await kong.service.request.set_header("x-consumer", str(consumer.get("username")))

    async def response(self, kong: kong.AsyncLuaStyleKong) -> None:
        status, _ = await kong.response.get_status()
        if status >= 500:
            await kong.log.warn("upstream failed with ", status)

    def log(self, kong: kong.kong) -> None:
        # A plain def handler next to async ones runs on a thread with the sync PDK.
        text, err = kong.log.serialize()
        if err is None:
            entry: dict[str, Any] = json.loads(text)
            kong.log.debug("served ", entry.get("request"))
