"""Kong's path normalisation for ``kong.request.get_path`` (RFC 3986 §6).

``get_raw_path`` is the path exactly as sent; ``get_path`` normalises it:
percent escapes of unreserved characters are decoded, other escapes get
upper-case hex, ``.`` and ``..`` segments are resolved, and runs of slashes
become one. Kong documents ``/t/Abc%20123%C3%B8%2f/parent/..//test/./`` as
``/t/Abc 123ø%2F/test/``, so a decoded space and UTF-8 stay decoded: every
escape except those of reserved characters (``gen-delims``/``sub-delims``)
and ``%`` itself is decoded.
"""

from __future__ import annotations

import re

__all__ = ["normalize_path"]

_RESERVED = set(b":/?#[]@!$&'()*+,;=%")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_unreserved(path: str) -> str:
    raw = path.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and _ESCAPE.fullmatch(raw[i : i + 3].decode("latin-1")):
            byte = int(raw[i + 1 : i + 3], 16)
            if byte in _RESERVED:
                out += b"%" + raw[i + 1 : i + 3].upper()
            else:
                out.append(byte)
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:] if path.startswith("/") else segments:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = segments[-1] in (".", "..")
    result = "/" + "/".join(out)
    if trailing and not result.endswith("/"):
        result += "/"
    return result


def normalize_path(path: str) -> str:
    if not path:
        return "/"
    decoded = _decode_unreserved(path)
    merged = re.sub("/{2,}", "/", decoded)
    return _remove_dot_segments(merged)
