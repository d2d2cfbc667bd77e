"""A plugin in python style, checked by mypy --strict and basedpyright.

In python style every PDK call returns its value and a failed call raises
``PDKException``. ``lua_style = False`` asks the server for that style; the
``kong.PythonStyleKong`` annotation tells the type checker the same. Arguments
may also be passed by their Lua names.
"""

from typing import Any

import kong_pdk.pdk.kong as kong
from kong_pdk.exception import PDKException

Schema = ({"header": {"type": "string"}},)
version = "0.1.0"
priority = 10


class Plugin:
    lua_style = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.header = str(config.get("header", "x-request-host"))

    def access(self, kong: kong.PythonStyleKong) -> None:
        try:
            host = kong.request.get_header("host")
        except PDKException as exc:
            kong.log.err("could not read the host header: ", exc)
            return
        if host is None:
            kong.response.exit(400, body=b"no host", headers={"content-type": "text/plain"})
        kong.service.request.set_header(self.header, host.lower())

        query = kong.request.get_query()
        if "debug" in query:
            kong.log.notice("debug flag set; values: ", query["debug"])

        route = kong.router.get_route()
        name = route.get("name") if route is not None else None
        kong.log("route: ", name, " node: ", kong.node.get_id())
        kong.service.set_timeouts(1000, 2000, 3000)
        kong.service.request.set_query({"debug": True, "ids": ["1", "2"]})

    def response(self, kong: kong.PythonStyleKong) -> None:
        headers = kong.response.get_headers()
        for name, values in headers.items():
            kong.log.debug(name, "=", ",".join(values))
        kong.response.add_header("x-elapsed", kong.nginx.req_start_time())

    def log(self, kong: kong.PythonStyleKong) -> None:
        raw = kong.service.response.get_raw_body()
        kong.log.info("upstream body bytes: ", len(raw))
