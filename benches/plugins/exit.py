#!/usr/bin/env python3
"""Benchmark scenario "exit": the first and only PDK call is the terminal
kong.response.exit(403, ...); Kong sends no Step after it.
"""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        kong.response.exit(403, "denied", {"x-why": "bench"})


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-exit", Plugin, version, priority, Schema)
