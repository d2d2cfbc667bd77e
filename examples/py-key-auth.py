#!/usr/bin/env python3
"""Key auth: lets a request through only with a known API key, and says who it is.

The key comes from the ``apikey`` header. Without one the client gets Kong's
401 error page; with an unknown one a JSON 401. With a known one the consumer
is authenticated, the key is hidden from the upstream, and the upstream learns
the username from ``X-Consumer-Username``.
"""

from typing import Any

import kong_pdk.pdk.kong as kong

Schema = (
    {"keys": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}, "required": True}},
    {"hide_credentials": {"type": "boolean", "default": True}},
)

version = "0.1.0"
priority = 1250


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.keys: dict[str, str] = dict(config.get("keys") or {})
        self.hide = bool(config.get("hide_credentials"))

    def access(self, kong: kong.kong) -> None:
        key, _ = kong.request.get_header("apikey")
        if not key:
            kong.response.error(401, "No API key found in request", {"WWW-Authenticate": 'Key realm="kong"'})
            return
        username = self.keys.get(key)
        if username is None:
            kong.response.exit(401, {"message": "Invalid authentication credentials"})
            return
        kong.client.authenticate({"username": username}, {"key": key})
        kong.service.request.set_header("X-Consumer-Username", username)
        if self.hide:
            kong.service.request.clear_header("apikey")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-key-auth", Plugin, version, priority, Schema)
