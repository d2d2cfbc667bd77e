"""tests/plugins/protobuf_plugin.py with every phase a plain ``def``: served
with -g, on ProtoBuf:1 the gevent hub owns the socket (the looped model)."""

from typing import Any

import kong_pdk.pdk.kong as kong

Schema = ({"mode": {"type": "string"}},)
version = "1.2.3"
priority = 7
protocol = "protobuf"


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.mode = config.get("mode", "echo")

    def access(self, kong: kong.kong) -> None:
        host, _ = kong.request.get_header("host")
        headers, _ = kong.request.get_headers()
        body, _ = kong.request.get_raw_body()
        kong.response.set_header("x-host", host)
        kong.response.set_header("x-accept", ",".join(headers["accept"] + headers["host"]))
        kong.response.set_header("x-body-type", type(body).__name__)
        if self.mode == "exit":
            kong.response.exit(403, b"denied", {"x-why": "pb"})
        elif self.mode == "lacking":
            try:
                kong.response.get_raw_body()
            except NotImplementedError as e:
                kong.log.err(str(e))
        elif self.mode == "raise":
            raise RuntimeError("boom")

    def log(self, kong: kong.kong) -> None:
        status, _ = kong.response.get_status()
        kong.log.notice("status", status)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("protobuf_plugin", Plugin, version, priority, Schema)
