#!/usr/bin/env python3
"""Request tag: one tag per request, carried across phases in ``kong.ctx.shared``.

``rewrite`` makes the tag, ``access`` sends it upstream, ``response`` returns it
to the client with the upstream's status, and ``log`` logs it: four phases of
one request sharing one table.
"""

from typing import Any

import kong_pdk.pdk.kong as kong

Schema = ({"header": {"type": "string", "default": "x-request-tag"}},)

version = "0.1.0"
priority = 900


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.header = str(config.get("header") or "x-request-tag")

    def rewrite(self, kong: kong.kong) -> None:
        method, _ = kong.request.get_method()
        path, _ = kong.request.get_path()
        kong.ctx.shared.set("tag", f"{method} {path}")

    def access(self, kong: kong.kong) -> None:
        tag, _ = kong.ctx.shared.get("tag")
        kong.service.request.set_header(self.header, str(tag))

    def response(self, kong: kong.kong) -> None:
        tag, _ = kong.ctx.shared.get("tag")
        status, _ = kong.response.get_status()
        kong.response.set_header(self.header, f"{tag} -> {status}")

    def log(self, kong: kong.kong) -> None:
        tag, _ = kong.ctx.shared.get("tag")
        status, _ = kong.response.get_status()
        kong.log.info("request ", tag, " ended with ", status)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-request-tag", Plugin, version, priority, Schema)
