"""A MessagePack encoder that writes what Kong writes (docs/protocol.md §3.2).

Kong encodes with lua-MessagePack in ``string_compat`` mode, and the bytes differ from
what a general-purpose library produces. The server must cope with *these* bytes, so we
produce exactly them:

* every Lua string is ``str``: fixstr, str16 ``da`` or str32 ``db``, **never str8 ``d9``**,
  whatever its bytes (§3.2, §11.1). A Python ``bytes`` value stands for a Lua string too.
  Only ``Bin`` (raw bodies, §6.2) goes out as bin8/16/32;
* a number whose value is integral is packed as an integer, in the smallest unsigned type
  when positive and the smallest signed type when negative; other numbers as float64
  ``cb``. So ``2.0`` is ``02``;
* a table is an array when its keys are exactly 1..n, otherwise a map; an empty table is
  the empty array ``90``; a key whose value is nil does not exist (§3.2, §11.3). Python
  lists and dicts are read as Lua tables: ``None`` is nil, ``NULL`` is ``cjson.null``
  (packed ``c0`` and kept as a key, §6.3);
* ``AsMap`` is a table Kong packs as a map even when empty (the multimap fix-up, §6.1).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, final

from kong_pdk.testing.kong.lua import NULL

__all__ = ["Bin", "AsMap", "pack", "table_entries"]


@final
class Bin:
    """A Lua string that Kong packs as msgpack ``bin`` (raw bodies, docs/protocol.md §6.2)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | str) -> None:
        self.data: bytes = (
            data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        )

    def __repr__(self) -> str:
        return f"Bin({self.data!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bin) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)


class AsMap(dict[object, object]):
    """A table that Kong packs as a map, ``80`` when empty (docs/protocol.md §6.1)."""


# Bounds of the integer formats; lua-MessagePack falls back to float64 outside them.
_UINT64_MAX: Final = 2**64 - 1
_INT64_MIN: Final = -(2**63)


def pack(value: object) -> bytes:
    """Encode ``value`` the way Kong's lua-MessagePack would."""
    out = bytearray()
    _pack_into(out, value, depth=0)
    return bytes(out)


def _pack_into(out: bytearray, value: object, depth: int) -> None:
    if depth > 512:
        raise ValueError("table nesting too deep for Kong's encoder")
    if value is None or value is NULL:
        out.append(0xC0)  # nil, and cjson.null which Kong patches to nil (§3.2)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, int):
        _pack_integer(out, value)
    elif isinstance(value, float):
        _pack_float(out, value)
    elif isinstance(value, str):
        _pack_str(out, value.encode("utf-8", "surrogateescape"))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _pack_str(out, bytes(value))  # a Lua string is packed as str whatever it holds (§11.1)
    elif isinstance(value, Bin):
        _pack_bin(out, value.data)
    elif isinstance(value, AsMap):
        _pack_map(out, _drop_nils(value.items()), depth)
    elif isinstance(value, (Mapping, list, tuple)):
        is_array, entries = table_entries(value)
        if is_array:
            _pack_array(out, [v for _, v in entries], depth)
        else:
            _pack_map(out, entries, depth)
    else:
        raise TypeError(f"no Lua value corresponds to {type(value).__name__}")


def table_entries(
    value: Mapping[object, object] | Sequence[object],
) -> tuple[bool, list[tuple[object, object]]]:
    """Read a Python dict/list as a Lua table: (packed as array?, its key/value pairs).

    lua-MessagePack decides per table (its default ``without_hole`` mode): every key is a
    positive number and the largest equals the count -> array, else map (§3.2).
    """
    if isinstance(value, Mapping):
        entries = _drop_nils(value.items())
    else:
        entries = _drop_nils((i + 1, v) for i, v in enumerate(value))
    largest = 0.0
    for key, _ in entries:
        number = _positive_number(key)
        if number is None:
            return False, entries
        largest = max(largest, number)
    if largest != len(entries):
        return False, entries  # holes: a map with number keys
    entries.sort(key=lambda kv: _positive_number(kv[0]) or 0.0)
    return True, entries


def _positive_number(key: object) -> float | None:
    if isinstance(key, (int, float)) and not isinstance(key, bool) and key > 0:
        return float(key)
    return None


def _drop_nils(items: Iterable[tuple[object, object]]) -> list[tuple[object, object]]:
    # A key whose value is nil does not exist in a Lua table (§3.2, §11.3).
    return [(k, v) for k, v in items if v is not None]


def _pack_integer(out: bytearray, n: int) -> None:
    if n >= 0:
        if n < 0x80:
            out.append(n)
        elif n <= 0xFF:
            out += b"\xcc" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xcd" + struct.pack(">H", n)
        elif n <= 0xFFFFFFFF:
            out += b"\xce" + struct.pack(">I", n)
        elif n <= _UINT64_MAX:
            out += b"\xcf" + struct.pack(">Q", n)
        else:
            _pack_float64(out, float(n))
    elif n >= -32:
        out.append(n & 0xFF)
    elif n >= -0x80:
        out += b"\xd0" + struct.pack(">b", n)
    elif n >= -0x8000:
        out += b"\xd1" + struct.pack(">h", n)
    elif n >= -0x80000000:
        out += b"\xd2" + struct.pack(">i", n)
    elif n >= _INT64_MIN:
        out += b"\xd3" + struct.pack(">q", n)
    else:
        _pack_float64(out, float(n))


def _pack_float(out: bytearray, x: float) -> None:
    # Lua has one number type; an integral value goes out as an integer (§3.2), so
    # get_http_version() of 2 arrives as 02 and 1.1 as cb.
    if math.isfinite(x) and x == math.floor(x) and _INT64_MIN <= x <= _UINT64_MAX:
        _pack_integer(out, int(x))
    else:
        _pack_float64(out, x)


def _pack_float64(out: bytearray, x: float) -> None:
    out += b"\xcb" + struct.pack(">d", x)


def _pack_str(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 32:
        out.append(0xA0 | n)
    elif n <= 0xFFFF:
        out += b"\xda" + struct.pack(">H", n)  # str16 even for 32..255: no str8 (§3.2)
    elif n <= 0xFFFFFFFF:
        out += b"\xdb" + struct.pack(">I", n)
    else:
        raise ValueError("string too long for MessagePack")
    out += data


def _pack_bin(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n <= 0xFF:
        out += b"\xc4" + struct.pack(">B", n)
    elif n <= 0xFFFF:
        out += b"\xc5" + struct.pack(">H", n)
    elif n <= 0xFFFFFFFF:
        out += b"\xc6" + struct.pack(">I", n)
    else:
        raise ValueError("binary too long for MessagePack")
    out += data


def _pack_table_header(out: bytearray, n: int, fix: int, code16: bytes, code32: bytes) -> None:
    """An array's or a map's length: the fix form below 16 entries, else 16 or 32 bits."""
    if n < 16:
        out.append(fix | n)
    elif n <= 0xFFFF:
        out += code16 + struct.pack(">H", n)
    else:
        out += code32 + struct.pack(">I", n)


def _pack_array(out: bytearray, items: list[object], depth: int) -> None:
    _pack_table_header(out, len(items), 0x90, b"\xdc", b"\xdd")
    for item in items:
        _pack_into(out, item, depth + 1)


def _pack_map(out: bytearray, entries: list[tuple[object, object]], depth: int) -> None:
    _pack_table_header(out, len(entries), 0x80, b"\xde", b"\xdf")
    for key, item in entries:
        _pack_into(out, key, depth + 1)
        _pack_into(out, item, depth + 1)
