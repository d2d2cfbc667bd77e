#!/usr/bin/env python3
"""The plugin of benches/pdk_call.py: each access event makes REPS calls of
each kind in KINDS and reports the handler thread's CPU time per kind.

The handler's own thread CPU (``time.thread_time_ns``) covers what the proxy
path costs on the handler's side of a call: attribute resolution, the name
and phase checks, argument encoding, writing the reply, waiting (detached,
so it costs nothing while blocked), and turning Kong's answer into Python.
The socket reader's work (decoding Kong's Step) runs on another thread and
is counted only in the server's total, which the driver reads from /proc.

``PDK_CALL_ASYNC=1`` makes ``access`` an ``async def`` that awaits each call;
``PDK_CALL_OUT`` names the file each event appends one JSON line to.
"""

import json
import os
import time

Schema = ({"reps": {"type": "integer"}},)
version = "0.1.0"
priority = 0

# (label, dotted path, args): what the driver answers is in benches/pdk_call.py.
# args None: the attributes are resolved and the function is not called.
KINDS = [
    ("kong.request.get_header (no call)", "kong.request.get_header", None),
    ("get_path()", "kong.request.get_path", ()),
    ('get_header("host")', "kong.request.get_header", ("host",)),
    ('set_header("x-a", "1")', "kong.response.set_header", ("x-a", "1")),
    ('ctx.shared.set("k", "v")', "kong.ctx.shared.set", ("k", "v")),
    ('log.debug("msg")', "kong.log.debug", ("msg",)),
    ("get_headers() (10 headers)", "kong.request.get_headers", ()),
]

OUT = os.environ.get("PDK_CALL_OUT", os.devnull)


def _report(per_kind):
    with open(OUT, "a") as f:
        f.write(json.dumps(per_kind) + "\n")


class SyncPlugin:
    def __init__(self, config):
        self.reps = int(config.get("reps") or 100)

    def access(self, kong):
        per_kind = {}
        for label, dotted, args in KINDS:
            names = dotted.split(".")[1:]
            start = time.thread_time_ns()
            for _ in range(self.reps):
                # Written out as a handler would: every call resolves its
                # attributes again, as `kong.request.get_header(...)` does.
                obj = kong
                for name in names:
                    obj = getattr(obj, name)
                if args is not None:
                    obj(*args)
            per_kind[label] = (time.thread_time_ns() - start) / self.reps
        _report(per_kind)


class AsyncPlugin:
    def __init__(self, config):
        self.reps = int(config.get("reps") or 100)

    async def access(self, kong):
        per_kind = {}
        for label, dotted, args in KINDS:
            names = dotted.split(".")[1:]
            start = time.thread_time_ns()
            for _ in range(self.reps):
                obj = kong
                for name in names:
                    obj = getattr(obj, name)
                if args is not None:
                    await obj(*args)
            per_kind[label] = (time.thread_time_ns() - start) / self.reps
        _report(per_kind)


Plugin = AsyncPlugin if os.environ.get("PDK_CALL_ASYNC") == "1" else SyncPlugin

if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-pdk-call", Plugin, version, priority, Schema)
