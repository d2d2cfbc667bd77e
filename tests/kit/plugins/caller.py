"""A plugin that makes the PDK calls its config lists, for the kit's own tests.

``calls`` is JSON: ``{"access": [["kong.request.get_header", ["host"]], ...], ...}``.
Every phase handler makes the calls listed for its phase, in order.
"""

import json

Schema = ({"calls": {"type": "string", "default": "{}"}},)
version = "1.0.0"
priority = 5


class Plugin:
    def __init__(self, config):
        self.calls = json.loads(config["calls"])

    def _run(self, kong, phase):
        for method, args in self.calls.get(phase, []):
            fn = kong
            for part in method.split(".")[1:]:
                fn = getattr(fn, part)
            fn(*args)

    def certificate(self, kong):
        self._run(kong, "certificate")

    def rewrite(self, kong):
        self._run(kong, "rewrite")

    def access(self, kong):
        self._run(kong, "access")

    def response(self, kong):
        self._run(kong, "response")

    def preread(self, kong):
        self._run(kong, "preread")

    def log(self, kong):
        self._run(kong, "log")
