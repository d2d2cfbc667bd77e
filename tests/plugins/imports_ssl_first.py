"""A plugin that imports from ssl and socket at its top, as one using requests (urllib3) does.

Names taken with ``from ssl import SSLContext`` keep the original unless gevent
patched before: that is what gevent's MonkeyPatchWarning is about. Served with
-g, the handler reports whether those names are gevent's.
"""

import os
from socket import socket
from ssl import SSLContext
from typing import Any

Schema = ()
version = "0.1.0"
priority = 0


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        import gevent.socket
        from gevent import monkey

        kong.response.set_header("x-socket-patched", str(monkey.is_module_patched("socket")))
        kong.response.set_header("x-ssl-patched", str(monkey.is_module_patched("ssl")))
        kong.response.set_header("x-socket-is-gevents", str(socket is gevent.socket.socket))
        kong.response.set_header("x-sslcontext-from", SSLContext.__module__)
        kong.response.set_header("x-pid", str(os.getpid()))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("imports_ssl_first", Plugin, version, priority, Schema)
