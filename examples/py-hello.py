#!/usr/bin/env python3
"""Hello: greets the client with a response header.

Serve it to Kong with ``python examples/py-hello.py -p /usr/local/kong`` (or
set it as ``pluginserver_py_hello_start_cmd``); ``--dump`` prints what Kong's
query command needs. Written the way plugins for the official package are, so
either package runs it.
"""

import os

import kong_pdk.pdk.kong as kong

Schema = (
    {"message": {"type": "string", "default": "hello"}},
)

version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    def access(self, kong: kong.kong) -> None:
        host, err = kong.request.get_header("host")
        if err:
            kong.log.err(err)
        greeting = self.config.get("message") or "hello"
        kong.response.set_header("x-hello-from-python", f"Python says {greeting} to {host}")
        kong.response.set_header("x-python-pid", str(os.getpid()))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("py-hello", Plugin, version, priority, Schema)
