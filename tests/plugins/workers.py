"""A plugin that tells which process ran it, for the worker-process tests (-m).

Every event answers with headers: ``x-pid`` (the process that ran the
handler), ``x-instance-pid`` (where the instance was built) and
``x-created`` (instances built in that process so far). ``x-case`` picks
what the handler does first.
"""

import os
import time

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 5


class Plugin:
    created = 0

    def __init__(self, config):
        if config.get("message") == "refuse":
            raise ValueError("this config is refused by the plugin")
        Plugin.created += 1
        self.built_in = os.getpid()

    def access(self, kong):
        case, _ = kong.request.get_header("x-case")
        if case == "exit":
            kong.response.exit(200, "bye")
        elif case == "sleep":
            # Computing in the worker while the core waits for its reply.
            time.sleep(3)
        elif case == "wait-kong":
            # Parked: the core waits for Kong's answer to this call.
            kong.request.get_header("x-block")
        elif case == "abandon":
            kong.request.get_header("x-never-answered")
        kong.response.set_header("x-pid", str(os.getpid()))
        kong.response.set_header("x-instance-pid", str(self.built_in))
        kong.response.set_header("x-created", str(Plugin.created))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("workers", Plugin, version, priority, Schema)
