"""The ``async def`` side of stalls.py: two PDK calls of one event awaited at once."""

import asyncio

Schema = ({"mode": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        results = await asyncio.gather(
            kong.request.get_header("a"),
            kong.request.get_header("b"),
            return_exceptions=True,
        )
        errors = [str(r) for r in results if isinstance(r, RuntimeError)]
        await kong.response.set_header("x-errors", repr(errors))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("stalls-async", Plugin, version, priority, Schema)
