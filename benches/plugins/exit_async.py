#!/usr/bin/env python3
"""Benchmark scenario "exit" with an `async def` handler (ours only).
kong.response.exit is not awaited: the call itself ends the handler."""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        kong.response.exit(403, "denied", {"x-why": "bench"})


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-exit", Plugin, version, priority, Schema)
