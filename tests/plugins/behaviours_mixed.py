"""behaviours_async.py with a plain ``def`` log phase: sync and ``async def``
phases in one plugin (the sync phase runs on a thread, the others on the
asyncio loop, bridged to the core's I/O threads)."""

from behaviours_async import Plugin as AsyncPlugin
from behaviours_async import Schema, priority, version


class Plugin(AsyncPlugin):
    def log(self, kong):  # type: ignore[override]
        kong.log.notice("log phase")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("behaviours", Plugin, version, priority, Schema)
