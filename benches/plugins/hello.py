#!/usr/bin/env python3
"""Benchmark scenario "hello": read one request header, set two response
headers (3 PDK calls per access event).

Written against the plugin API shared by the official kong-pdk package and
ours. Run: python hello.py --kong-prefix DIR --socket-name bench-hello.socket
"""

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


def _value(ret):
    # Lua-style PDK calls return (value, error); others return the value.
    return ret[0] if isinstance(ret, tuple) else ret


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        host = _value(kong.request.get_header("host"))
        kong.response.set_header("x-hello", "hello %s" % host)
        kong.response.set_header("x-two", "2")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-hello", Plugin, version, priority, Schema)
