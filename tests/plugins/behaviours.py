"""A plugin whose access handler does what the request's ``x-case`` header says.

One plugin file covers many server behaviours; each test picks a case by
answering ``kong.request.get_header("x-case")``.
"""

import socket
import time

Schema = (
    {"message": {"type": "string"}},
    {"route_id": {"type": "string"}},
)
version = "1.2.3"
priority = 10


class Plugin:
    def __init__(self, config):
        self.config = config
        if config.get("message") == "refuse":
            raise ValueError("this config is refused by the plugin")

    def access(self, kong):
        case, err = kong.request.get_header("x-case")
        if case == "exit":
            kong.response.exit(403, "denied", {"x-why": "exit"})
            kong.log.err("code after exit ran")  # must never reach Kong
        elif case == "exit-none-body":
            kong.response.exit(401, None, {"x-a": "1"})
        elif case == "raise":
            raise RuntimeError("plugin bug")
        elif case == "raise-after-catch-all":
            try:
                kong.response.exit(200, "ok")
            except Exception:
                kong.log.err("except Exception swallowed the exit")
        elif case == "config":
            kong.response.set_header("x-config", repr(sorted(self.config.items())))
        elif case == "echo":
            # Sends back whatever Kong answered for x-value, to check conversions.
            value, err = kong.request.get_header("x-value")
            kong.response.set_header("x-echo", value)
            kong.response.set_header("x-echo-type", type(value).__name__)
        elif case == "raw-body":
            body, err = kong.request.get_raw_body()
            kong.response.set_header("x-body-type", type(body).__name__)
            kong.response.exit(200, body)
        elif case == "multimap":
            headers, err = kong.request.get_headers()
            kong.response.set_header("x-multimap", repr(sorted(headers.items())))
        elif case == "log-anything":
            kong.log.info("values:", object(), {1, 2}, None, 3)
        elif case == "wait":
            # Several PDK calls with thinking in between: concurrency tests.
            for i in range(3):
                kong.request.get_header("x-step-%d" % i)
                time.sleep(0.05)
        elif case == "none-in-middle":
            try:
                kong.service.request.set_header(None, "x")
            except TypeError as e:
                kong.response.set_header("x-error", str(e))
        elif case == "error-tuple":
            value, err = kong.request.get_header("x-missing")
            kong.response.set_header("x-result", repr((value, err)))
        elif case == "abandon":
            try:
                kong.request.get_header("x-never-answered")
            finally:
                # Runs when the server reclaims the event.
                pass
        elif case == "io":
            # Blocking I/O: under -g it must yield to the other events.
            path, _ = kong.request.get_header("x-io-socket")
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            line = s.makefile().readline().strip()
            s.close()
            kong.response.set_header("x-io", line)
        elif case == "after-event":
            Plugin.kept = kong
        elif case == "use-kept":
            try:
                Plugin.kept.request.get_header("host")
            except Exception as e:
                kong.response.set_header("x-error", type(e).__name__)
        else:
            kong.response.set_header("x-case", str(case))

    def log(self, kong):
        kong.log.notice("log phase")

    def rewrite(self, kong):
        case, err = kong.request.get_header("x-case")
        if case == "raise":
            raise KeyError("in rewrite")

    def response(self, kong):
        status, err = kong.response.get_status()
        if status == 500:
            raise RuntimeError("response phase failure")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("behaviours", Plugin, version, priority, Schema)
