"""A plugin in lua style (the default error style), checked by mypy --strict and basedpyright.

Shaped like Kong's hello example: it reads the Host header and answers with two
headers of its own. Every PDK call returns ``(value, err)``. There is deliberately
no ``from __future__ import annotations``: the annotation ``kong.kong`` is
evaluated when the class is created, as in plugins written for the official package.
"""

import json
import os
from typing import Any

import kong_pdk.pdk.kong as kong

Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 0


def bearer_token(kong: kong.kong) -> str:
    """The bearer token of the request, or the request ends with a 401."""
    auth, err = kong.request.get_header("authorization")
    if err is not None or auth is None or not auth.startswith("Bearer "):
        # exit never returns, so below this line auth is a str.
        kong.response.exit(401, {"message": "missing token"}, {"WWW-Authenticate": "Bearer"})
    return auth.removeprefix("Bearer ")


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: kong.kong) -> None:
        host, err = kong.request.get_header("host")
        if err:
            kong.log.err("could not read the host header: ", err)
            return
        message = str(self.config.get("message", "hello"))
        kong.response.set_header("x-hello-from-python", f"Python says {message} to {host}")
        kong.response.set_header("x-python-pid", os.getpid())

        headers, _ = kong.request.get_headers()
        accept: list[str] = headers.get("accept", [])
        kong.log("accept: ", accept, " token length: ", len(bearer_token(kong)))
        kong.log.inspect({"headers": headers})

        body, err = kong.request.get_raw_body()
        if err is None and body.startswith(b"{"):
            kong.service.request.set_raw_body(body.upper())
        kong.service.request.set_headers({"x-seen": "1", "x-count": 2, "x-many": ["a", "b"]})
        kong.ctx.shared.set("host", host)

        consumer, _ = kong.client.get_consumer()
        if consumer is None:
            kong.response.error(403, "no consumer")
        kong.service.request.set_header("x-consumer", str(consumer.get("username")))

    def response(self, kong: kong.kong) -> None:
        status, _ = kong.response.get_status()
        if status >= 500:
            kong.log.warn("upstream failed with ", status)

    def log(self, kong: kong.kong) -> None:
        text, err = kong.log.serialize()
        if err is None:
            entry: dict[str, Any] = json.loads(text)
            kong.log.debug("served ", entry.get("request"))
