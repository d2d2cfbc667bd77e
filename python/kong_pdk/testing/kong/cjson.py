"""JSON text as Kong's ``cjson.encode`` writes it, for the ``Config`` string (docs/protocol.md §6.5).

The server has to parse this text, so the quirks of lua-cjson matter:

* ``/`` is escaped as ``\\/``; control characters as ``\\b \\t \\n \\f \\r`` or ``\\u00XX``,
  DEL as ``\\u007f``; bytes >= 0x80 are copied raw (cjson does not validate UTF-8);
* numbers use ``%.14g`` (Lua numbers are doubles), so ``1e14`` is written ``1e+14``;
  NaN and infinity are refused, as cjson does by default;
* a Lua table is an array when its keys are the positive integers 1..max (holes become
  ``null``, a too sparse array is refused); otherwise an object, number keys as strings;
* an empty table is ``{}``, except an empty Python list, which stands for a table Kong
  marked as an array and is ``[]``;
* ``None`` is Lua nil (the key vanishes), ``NULL`` is ``cjson.null`` (``null``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from kong_pdk.testing.kong.lua import NULL

__all__ = ["cjson_encode"]

# cjson's defaults for encode_sparse_array: convert=false, ratio=2, safe=10.
_SPARSE_RATIO: Final = 2
_SPARSE_SAFE: Final = 10

_ESCAPES: Final[dict[str, str]] = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    "\x7f": "\\u007f",
}


def cjson_encode(value: object) -> str:
    """Encode like ``cjson.encode``. Non-UTF-8 bytes travel as surrogate escapes."""
    parts: list[str] = []
    _encode(parts, value, 0)
    return "".join(parts)


def _encode(parts: list[str], value: object, depth: int) -> None:
    if depth > 1000:  # cjson's encode_max_depth
        raise ValueError("Cannot serialise, excessive nesting (1001)")
    if value is None or value is NULL:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, (int, float)):
        parts.append(_number(value))
    elif isinstance(value, str):
        parts.append(_string(value))
    elif isinstance(value, bytes):
        parts.append(_string(value.decode("utf-8", "surrogateescape")))
    elif isinstance(value, (list, tuple)):
        _array(parts, list(value), depth)
    elif isinstance(value, Mapping):
        _table(parts, value, depth)
    else:
        raise TypeError(f"Cannot serialise {type(value).__name__}: type not supported")


def _number(x: int | float) -> str:
    f = float(x)
    if not math.isfinite(f):
        raise ValueError("Cannot serialise number: must not be NaN or Infinity")
    return "%.14g" % f


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _array(parts: list[str], items: list[object], depth: int) -> None:
    # A Python list is a Lua sequence; a trailing nil shortens it, inner nils are holes.
    while items and items[-1] is None:
        items.pop()
    _check_sparse(len(items), sum(1 for v in items if v is not None))
    parts.append("[")
    for i, item in enumerate(items):
        if i:
            parts.append(",")
        _encode(parts, item, depth + 1)
    parts.append("]")


def _table(parts: list[str], table: Mapping[object, object], depth: int) -> None:
    entries = [(k, v) for k, v in table.items() if v is not None]
    if not entries:
        parts.append("{}")  # cjson's encode_empty_table_as_object default
        return
    by_index = _as_sequence(entries)
    if by_index is not None:
        largest = max(by_index)
        _check_sparse(largest, len(by_index))
        _array(parts, [by_index.get(i) for i in range(1, largest + 1)], depth)
        return
    parts.append("{")
    for i, (key, item) in enumerate(entries):
        if i:
            parts.append(",")
        if isinstance(key, str):
            parts.append(_string(key))
        elif isinstance(key, bytes):
            parts.append(_string(key.decode("utf-8", "surrogateescape")))
        elif isinstance(key, (int, float)) and not isinstance(key, bool):
            parts.append('"' + _number(key) + '"')
        else:
            raise TypeError("Cannot serialise table: table key must be a number or string")
        parts.append(":")
        _encode(parts, item, depth + 1)
    parts.append("}")


def _as_sequence(entries: list[tuple[object, object]]) -> dict[int, object] | None:
    """``{index: value}`` if every key is a positive integer, else None (cjson's test)."""
    by_index: dict[int, object] = {}
    for key, item in entries:
        if isinstance(key, bool) or not isinstance(key, (int, float)):
            return None
        if key < 1 or key != math.floor(key):
            return None
        by_index[int(key)] = item
    return by_index


def _check_sparse(length: int, count: int) -> None:
    if length > _SPARSE_SAFE and length > count * _SPARSE_RATIO:
        raise ValueError("Cannot serialise table: excessively sparse array")
