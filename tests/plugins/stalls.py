"""A plugin that misbehaves on purpose, for tests/reliability/ (issue 9).

The instance's ``mode`` config (or, without one, the request's ``x-case``
header) picks what the access handler does. Every mode is something a real
plugin may do by mistake: sleep, block forever, keep running after
``kong.response.exit``, call the PDK from two threads, kill the process.
"""

import os
import sys
import threading
import time

from kong_pdk.exception import EventAbandoned

Schema = (
    {"mode": {"type": "string"}},
    {"seconds": {"type": "number"}},
    {"message": {"type": "string"}},
)
version = "0.1.0"
priority = 0

# Long enough to outlive any test, short enough that a forgotten thread ends.
FOREVER = 120.0


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        mode = self.config.get("mode")
        if mode is None:
            mode, _ = kong.request.get_header("x-case")
        if mode == "hello":
            host, _ = kong.request.get_header("host")
            kong.response.set_header("x-hello", "hello %s" % host)
        elif mode == "sleep":
            # The first PDK call shows Kong that the handler started.
            kong.log.notice("started")
            time.sleep(float(self.config.get("seconds") or 3))
        elif mode == "sleep-then-call":
            # Past --handler-timeout the event is no longer the handler's.
            kong.log.notice("started")
            time.sleep(float(self.config.get("seconds") or 2))
            try:
                kong.response.set_header("x-after", "yes")
            except EventAbandoned:
                print("stalls: EventAbandoned after the sleep", file=sys.stderr, flush=True)
                raise
        elif mode == "stuck":
            threading.Event().wait(FOREVER)
        elif mode == "exit-then-finally":
            try:
                kong.response.exit(403, "bye")
            finally:
                time.sleep(float(self.config.get("seconds") or 2))
        elif mode == "two-threads":
            errors = []

            def other():
                try:
                    kong.request.get_header("a")
                except RuntimeError as e:
                    errors.append(str(e))

            thread = threading.Thread(target=other)
            thread.start()
            try:
                kong.request.get_header("b")
            except RuntimeError as e:
                errors.append(str(e))
            thread.join(10)
            kong.response.set_header("x-errors", repr(errors))
        elif mode == "body-length":
            body, _ = kong.request.get_raw_body()
            kong.response.set_header("x-body-length", str(len(body)))
        elif mode == "os-exit":
            os._exit(3)
        else:
            kong.response.set_header("x-mode", str(mode))

    def log(self, kong):
        if self.config.get("mode") == "stuck":
            threading.Event().wait(FOREVER)
        if self.config.get("mode") == "sleep-then-call":
            self.access(kong)
            return
        kong.log.notice("log phase")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("stalls", Plugin, version, priority, Schema)
