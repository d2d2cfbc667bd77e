#!/usr/bin/env python3
"""Benchmark scenario "hello" with an `async def` handler (ours only): the
PDK calls of hello.py, awaited on the server's asyncio loop."""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        host, _ = await kong.request.get_header("host")
        await kong.response.set_header("x-hello", "hello %s" % host)
        await kong.response.set_header("x-two", "2")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-hello", Plugin, version, priority, Schema)
