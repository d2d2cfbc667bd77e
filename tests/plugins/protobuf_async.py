"""tests/plugins/protobuf_plugin.py with every phase ``async def``: on ProtoBuf:1
the runner's asyncio loop owns the socket (the looped model)."""

from typing import Any

import kong_pdk.pdk.kong as kong

Schema = ({"mode": {"type": "string"}},)
version = "1.2.3"
priority = 7
protocol = "protobuf"


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.mode = config.get("mode", "echo")

    async def access(self, kong: kong.kong) -> None:
        host, _ = await kong.request.get_header("host")
        headers, _ = await kong.request.get_headers()
        body, _ = await kong.request.get_raw_body()
        await kong.response.set_header("x-host", host)
        await kong.response.set_header("x-accept", ",".join(headers["accept"] + headers["host"]))
        await kong.response.set_header("x-body-type", type(body).__name__)
        if self.mode == "exit":
            kong.response.exit(403, b"denied", {"x-why": "pb"})
        elif self.mode == "lacking":
            try:
                await kong.response.get_raw_body()
            except NotImplementedError as e:
                await kong.log.err(str(e))
        elif self.mode == "raise":
            raise RuntimeError("boom")

    async def log(self, kong: kong.kong) -> None:
        status, _ = await kong.response.get_status()
        await kong.log.notice("status", status)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("protobuf_plugin", Plugin, version, priority, Schema)
