#!/usr/bin/env python3
"""Body transform: rewrites a JSON request body before it goes upstream.

Fields named in ``remove`` are dropped and ``add`` fields are set; a body that
is not a JSON object is refused with 400. Other content types pass untouched.
"""

import kong_pdk.pdk.kong as kong
from kong_pdk.typing import PluginConfig, PluginSchema, Priority, Version

Schema: PluginSchema = (
    {"remove": {"type": "array", "elements": {"type": "string"}, "default": []}},
    {"add": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}, "default": {}}},
)

version: Version = "0.1.0"
priority: Priority = 800


class Plugin:
    def __init__(self, config: PluginConfig) -> None:
        self.remove: list[str] = list(config.get("remove") or [])
        self.add: dict[str, str] = dict(config.get("add") or {})

    def access(self, kong: kong.kong) -> None:
        content_type, _ = kong.request.get_header("content-type")
        if not content_type or not content_type.lower().startswith("application/json"):
            return
        body, _ = kong.request.get_body()  # None (and an error) when the body is not JSON
        if isinstance(body, list) and not body:
            body = {}  # an empty JSON object: to Lua an empty table, which arrives as []
        if not isinstance(body, dict):
            kong.response.exit(400, {"message": "expected a JSON object"})
        for name in self.remove:
            body.pop(name, None)
        body.update(self.add)
        kong.service.request.set_body(body, "application/json")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-body-transform", Plugin, version, priority, Schema)
