#!/usr/bin/env python3
"""Benchmark scenario "heavy" with an `async def` handler (ours only): the
20 PDK calls of heavy.py, in the same order, awaited."""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        await kong.request.get_header("host")
        await kong.request.get_path()
        await kong.request.get_method()
        await kong.request.get_scheme()
        await kong.request.get_headers()
        await kong.request.get_query()
        await kong.client.get_ip()
        await kong.log.debug("bench heavy start")
        await kong.request.get_header("user-agent")
        await kong.ctx.shared.set("bench", "1")
        await kong.ctx.shared.get("bench")
        await kong.service.request.set_header("x-upstream", "1")
        await kong.response.set_header("x-h1", "1")
        await kong.response.set_header("x-h2", "2")
        await kong.response.add_header("x-h3", "3")
        await kong.response.set_header("x-h4", "4")
        await kong.request.get_host()
        await kong.log.debug("bench heavy end")
        await kong.response.set_header("x-h5", "5")
        await kong.response.set_header("x-h6", "6")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-heavy", Plugin, version, priority, Schema)
