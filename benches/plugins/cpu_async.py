#!/usr/bin/env python3
"""Benchmark scenario "cpu" with an `async def` handler (ours only): the
loop of cpu.py (same config, same loop count), run on the event loop, then
one awaited set_header."""

from cpu import _burn, _iterations_per_ms

Schema = ({"cpu_us": {"type": "integer"}}, {"iterations": {"type": "integer"}})
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        config = config or {}
        iterations = config.get("iterations")
        if not iterations:
            iterations = _iterations_per_ms() * (config.get("cpu_us") or 1000) / 1000.0
        self.iterations = max(1, int(iterations))

    async def access(self, kong):
        _burn(self.iterations)
        await kong.response.set_header("x-cpu", "done")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-cpu", Plugin, version, priority, Schema)
