#!/usr/bin/env python3
"""Benchmark scenario "heavy": 20 PDK calls per access event, a mix of
request reads, multimap reads, logging, ctx.shared and header writes.

The order must match HEAVY in benches/loadgen/src/scenario.rs, which the load
generator checks every event against.
"""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        kong.request.get_header("host")
        kong.request.get_path()
        kong.request.get_method()
        kong.request.get_scheme()
        kong.request.get_headers()
        kong.request.get_query()
        kong.client.get_ip()
        kong.log.debug("bench heavy start")
        kong.request.get_header("user-agent")
        kong.ctx.shared.set("bench", "1")
        kong.ctx.shared.get("bench")
        kong.service.request.set_header("x-upstream", "1")
        kong.response.set_header("x-h1", "1")
        kong.response.set_header("x-h2", "2")
        kong.response.add_header("x-h3", "3")
        kong.response.set_header("x-h4", "4")
        kong.request.get_host()
        kong.log.debug("bench heavy end")
        kong.response.set_header("x-h5", "5")
        kong.response.set_header("x-h6", "6")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-heavy", Plugin, version, priority, Schema)
