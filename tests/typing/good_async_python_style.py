"""An async plugin in python style, checked by mypy --strict and basedpyright.

Every handler is ``async def`` and annotated with ``kong.AsyncPythonStyleKong``:
each PDK call is awaited and gives the value; awaiting a failed call raises
``PDKException``. ``kong.response.exit`` / ``error`` are not awaited: calling
them ends the handler. The plugin sets no ``lua_style`` attribute: the
``AsyncPythonStyleKong`` annotation alone makes the server use python style
(kong_pdk.serve.lua_style_of), so annotation and runtime agree by construction.
"""

import asyncio
from typing import Any

import kong_pdk.pdk.kong as kong
from kong_pdk.exception import PDKException

Schema = ({"header": {"type": "string"}},)
version = "0.1.0"
priority = 10


async def request_host(kong: kong.AsyncPythonStyleKong) -> str:
    """The Host header, lowercased; a request without one ends with a 400."""
    host = await kong.request.get_header("host")
    if host is None:
        kong.response.exit(400, body=b"no host", headers={"content-type": "text/plain"})
    return host.lower()


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.header = str(config.get("header", "x-request-host"))

    async def access(self, kong: kong.AsyncPythonStyleKong) -> None:
        try:
            host = await request_host(kong)
        except PDKException as exc:
            await kong.log.err("could not read the host header: ", exc)
            return
        await kong.service.request.set_header(self.header, host)

        query = await kong.request.get_query()
        if "debug" in query:
            await kong.log.notice("debug flag set; values: ", query["debug"])

        route = await kong.router.get_route()
        name = route.get("name") if route is not None else None
        await kong.log("route: ", name, " node: ", await kong.node.get_id())
        await kong.service.set_timeouts(1000, 2000, 3000)
        await kong.service.request.set_query({"debug": True, "ids": ["1", "2"]})
        # Other awaitables share the loop with the PDK calls; this one lets other handlers run.
        await asyncio.sleep(0)

    async def response(self, kong: kong.AsyncPythonStyleKong) -> None:
        headers = await kong.response.get_headers()
        for name, values in headers.items():
            await kong.log.debug(name, "=", ",".join(values))
        await kong.response.add_header("x-elapsed", await kong.nginx.req_start_time())

    async def log(self, kong: kong.AsyncPythonStyleKong) -> None:
        raw = await kong.service.response.get_raw_body()
        await kong.log.info("upstream body bytes: ", len(raw))
