"""Calls the PDK function named by the request, with the arguments it names.

Used by tests/test_pdk_roundtrip.py to push every function of pdk-api.json
through the proxy and the socket.
"""

import json

Schema = ()
version = "1.0.0"
priority = 0


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        name, _ = kong.request.get_header("x-fn")
        args_json, _ = kong.request.get_header("x-args")
        args = json.loads(args_json)
        if isinstance(args, dict):  # bytes travel as {"bytes": "<latin-1 text>"}
            args = args["list"]
        args = [a["bytes"].encode("latin-1") if isinstance(a, dict) and "bytes" in a else a for a in args]
        target = kong
        for part in name.split(".")[1:]:
            target = getattr(target, part)
        result = target(*args)
        kong.response.set_header("x-result", repr(result))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("every-call", Plugin, version, priority, Schema)
