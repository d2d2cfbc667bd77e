"""The async twin of behaviours.py: ``async def`` handlers awaiting the PDK.

Every phase is ``async def``, so the asyncio loop owns the socket (src/models/looped/);
behaviours_mixed.py runs the same handlers next to a plain ``def`` phase."""

import asyncio

Schema = ({"message": {"type": "string"}},)
version = "1.2.3"
priority = 10


class Plugin:
    def __init__(self, config):
        self.config = config

    async def access(self, kong):
        case, err = await kong.request.get_header("x-case")
        if case == "exit":
            kong.response.exit(403, "denied", {"x-why": "exit"})
            await kong.log.err("code after exit ran")
        elif case == "raise":
            raise RuntimeError("plugin bug")
        elif case == "wait":
            for i in range(3):
                await kong.request.get_header("x-step-%d" % i)
                await asyncio.sleep(0.05)
        elif case == "error-tuple":
            value, err = await kong.request.get_header("x-missing")
            await kong.response.set_header("x-result", repr((value, err)))
        elif case == "abandon":
            await kong.request.get_header("x-never-answered")
        elif case == "gather":
            # Two PDK calls in flight at once: the second raises at once.
            await asyncio.gather(kong.request.get_header("x-a"), kong.request.get_header("x-b"))
        elif case == "log-anything":
            await kong.log.info("values:", object(), {1, 2}, None, 3)
        elif case == "io":
            path, _ = await kong.request.get_header("x-io-socket")
            reader, writer = await asyncio.open_unix_connection(path)
            line = (await reader.readline()).decode().strip()
            writer.close()
            await kong.response.set_header("x-io", line)
        else:
            await kong.response.set_header("x-case", str(case))

    async def log(self, kong):
        await kong.log.notice("log phase")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("behaviours", Plugin, version, priority, Schema)
