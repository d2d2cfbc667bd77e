"""The bodies ``kong.response.error`` produces, and the message for each status.

Kong picks the format from a Content-Type given in the call's headers, else the
request's ``Accept`` header (the media range with the highest q wins; ties keep
the first), defaulting to JSON. Each format has a fixed template holding the
message and the request id; the message defaults to a text per status, or
"The upstream server responded with <status>". The JSON template is written by
hand, so a message with quotes is not escaped, exactly like Kong.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["error_message", "response_type", "error_body", "JSON_TYPE"]

JSON_TYPE: Final = "application/json; charset=utf-8"

_MESSAGES: Final[dict[int, str]] = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    407: "Proxy authentication required",
    408: "Request timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length required",
    412: "Precondition failed",
    413: "Payload too large",
    414: "URI too long",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    417: "Expectation failed",
    418: "I'm a teapot",
    421: "Misdirected request",
    422: "Unprocessable entity",
    423: "Locked",
    424: "Failed dependency",
    425: "Too early",
    426: "Upgrade required",
    428: "Precondition required",
    429: "Too many requests",
    431: "Request header fields too large",
    451: "Unavailable for legal reasons",
    494: "Request header or cookie too large",
    500: "An unexpected error occurred",
    501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
    505: "HTTP version not supported",
    506: "Variant also negotiates",
    507: "Insufficient storage",
    508: "Loop detected",
    510: "Not extended",
    511: "Network authentication required",
}

# Media type (or major type) -> the Content-Type Kong answers with.
_MIME: Final[dict[str, str]] = {
    "text/html": "text/html; charset=utf-8",
    "application/json": JSON_TYPE,
    "text/plain": "text/plain; charset=utf-8",
    "application/xml": "application/xml; charset=utf-8",
    "application": JSON_TYPE,
    "text": "text/plain; charset=utf-8",
}

_RANGE = re.compile(
    r"((?:[a-z0-9][a-z0-9\-!#$&^_+.]+|\*)/(?:[a-z0-9][a-z0-9\-!#$&^_+.]+|\*))"
    r"(?:\s*;\s*q=(1(?:\.0{0,3})?|0(?:\.\d{0,3})?)|\s*;\s*[a-z0-9][a-z0-9\-!#$&^_+.]+(?:=[^;]*)?)*",
    re.IGNORECASE,
)


def error_message(status: int) -> str:
    return _MESSAGES.get(status, f"The upstream server responded with {status}")


def _mime_of(media_type: str) -> str:
    major, _, minor = media_type.strip().split(";", 1)[0].partition("/")
    if not minor:
        return JSON_TYPE
    if minor == "*":
        return JSON_TYPE if major == "*" else _MIME.get(major, JSON_TYPE)
    return _MIME.get(f"{major}/{minor}", JSON_TYPE)


def response_type(accept: str | list[str] | None) -> str:
    if accept is None:
        return JSON_TYPE
    if isinstance(accept, list):
        accept = ",".join(accept)
    chosen = JSON_TYPE
    best = 0.0
    for value in accept.split(","):
        m = _RANGE.match(value.strip())
        if not m:
            continue
        q = float(m.group(2)) if m.group(2) else 1.0
        if q > best:
            best = q
            chosen = _mime_of(m.group(1))
    return chosen


def error_body(content_type: str, message: str, request_id: str) -> str | None:
    """The body for a Content-Type; None for gRPC (no body), or an unknown type."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base == "application/json":
        return '{\n  "message":"%s",\n  "request_id":"%s"\n}' % (message, request_id)
    if base == "text/html":
        return (
            "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n"
            "    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n"
            f"    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
        )
    if base == "application/xml":
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n'
            f"  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
        )
    if base == "text/plain":
        return f"{message}\nrequest_id: {request_id}\n"
    return None
