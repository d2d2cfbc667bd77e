"""Reading the server's bytes the way Kong reads them (docs/protocol.md §2 "Reading", §3.1).

Decoding uses the stock ``msgpack`` package, an independent MessagePack implementation,
so the server is never checked by our own decoder. Kong's reader, reproduced here:

* every RPC starts a **fresh** stream decoder and reads 4096-byte chunks until one whole
  object is decoded;
* notifications ``[2, label, args]`` in front of the reply are dispatched and skipped;
* bytes after the reply are **thrown away** (we count them, so tests can assert that the
  server never writes after a response);
* the reply must have type 1 and the request's msgid (Kong ``assert``s both, §11.6), and
  its error element must be nil or a string (Kong lower-cases it, §3.1). A ``bin`` error
  is fine: it is a Lua string too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from kong_pdk.testing.kong.errors import KongProtocolError, TransportError

__all__ = [
    "Reply",
    "Notification",
    "read_message",
    "read_reply",
    "new_decoder",
    "decode_value",
    "CHUNK",
]

# Kong reads the socket 4096 bytes at a time (§2).
CHUNK = 4096


@dataclass(frozen=True)
class Notification:
    """``[2, label, args]`` sent by the server ahead of a reply (§2 "Notifications")."""

    label: object
    args: object


@dataclass(frozen=True)
class Reply:
    """A ``[1, msgid, error, result]`` reply as Kong sees it."""

    msgid: object
    error: str | None
    result: object
    notifications: tuple[Notification, ...]
    discarded_bytes: int


class Decoder(Protocol):
    """The part of ``msgpack.Unpacker`` we use (msgpack ships no type hints)."""

    def feed(self, data: bytes) -> None: ...

    def tell(self) -> int: ...

    def __iter__(self) -> Iterator[object]: ...

    def __next__(self) -> object: ...


def msgpack_module() -> ModuleType:
    """The stock ``msgpack`` package, imported on first use.

    Only reading a reply needs it, so every module of the kit imports without
    the testing extra (a plugin's test file imports ``ConfigError``, pytest
    imports our plugin in every session); the first read says what is missing.
    """
    try:
        import msgpack  # type: ignore[import-untyped]  # ships no type information
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "kong_pdk.testing needs the 'msgpack' package: pip install 'kong-pdk-native[testing]'"
        ) from exc
    module: ModuleType = msgpack
    return module


def _no_ext(code: int, data: bytes) -> object:
    # §3.3: Kong's decoder has no use for ext types; treat them as a broken reply.
    raise KongProtocolError(f"the server sent a MessagePack ext type ({code})")


def new_decoder() -> Decoder:
    """A fresh decoder per RPC, as Kong makes one per call (§2)."""
    decoder: Decoder = msgpack_module().Unpacker(
        raw=False,
        unicode_errors="surrogateescape",  # str with invalid UTF-8 keeps its bytes (§11.1)
        strict_map_key=False,  # Lua tables may have number keys
        ext_hook=_no_ext,
        max_buffer_size=0,  # Kong's reader has no size limit; 0 means msgpack's maximum
    )
    return decoder


class _KongReader:
    """One RPC's reading: a fresh decoder fed 4096-byte chunks (§2)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._decoder = new_decoder()
        self._fed = 0

    def next_object(self) -> object:
        while True:
            try:
                for obj in self._decoder:
                    return obj
            except KongProtocolError:
                raise
            except (ValueError, TypeError, RecursionError, msgpack_module().UnpackException) as exc:
                # msgpack's format errors are ValueErrors; an unhashable map key a TypeError.
                raise KongProtocolError(f"the server sent bytes Kong cannot decode: {exc!r}") from exc
            self._feed()

    def _feed(self) -> None:
        try:
            chunk = self._sock.recv(CHUNK)
        except TimeoutError as exc:
            raise TransportError("timeout") from exc
        except OSError as exc:
            raise TransportError(str(exc) or "no data") from exc
        if not chunk:
            raise TransportError("closed")
        self._decoder.feed(chunk)
        self._fed += len(chunk)

    @property
    def leftover(self) -> int:
        """Bytes already read past the last decoded object."""
        consumed: int = self._decoder.tell()
        return self._fed - consumed


def decode_value(data: bytes) -> object:
    """Decode one packed value the way the emulator decodes the server's replies."""
    decoder = new_decoder()
    decoder.feed(data)
    return next(decoder)


def read_message(sock: socket.socket) -> tuple[object, int]:
    """Read one whole MessagePack object with a fresh decoder, no checks.

    Returns the object and the number of bytes read past it (thrown away).
    """
    reader = _KongReader(sock)
    obj = reader.next_object()
    return obj, reader.leftover


def read_reply(
    sock: socket.socket,
    msgid: int | None,
    on_notification: Callable[[Notification], None],
) -> Reply:
    """Read notifications, then one reply; check it as Kong's asserts do.

    ``msgid=None`` skips the msgid check (for raw connections in tests).
    """
    notifications: list[Notification] = []
    reader = _KongReader(sock)
    while True:
        obj = reader.next_object()
        if isinstance(obj, list) and obj and _is_lua_int(obj[0], 2):
            note = Notification(obj[1] if len(obj) > 1 else None, obj[2] if len(obj) > 2 else None)
            notifications.append(note)
            on_notification(note)
            continue
        return _check_reply(obj, msgid, tuple(notifications), reader.leftover)


def _is_lua_int(value: object, expected: int) -> bool:
    # Lua compares numbers by value (1.0 == 1) but true is not 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == expected


def _check_reply(
    obj: object,
    msgid: int | None,
    notifications: tuple[Notification, ...],
    discarded: int,
) -> Reply:
    if not isinstance(obj, list):
        # Kong indexes the message as a table; a map would not have [1] == 1 either.
        raise KongProtocolError(f"reply is not an array: {obj!r}")
    items = obj + [None] * (4 - len(obj))  # missing trailing elements are nil in Lua
    if not _is_lua_int(items[0], 1):
        raise KongProtocolError(f"reply type is {items[0]!r}, Kong asserts 1")
    if msgid is not None and not _is_lua_int(items[1], msgid):
        raise KongProtocolError(f"reply msgid is {items[1]!r}, Kong asserts {msgid}")
    error = items[2]
    if isinstance(error, bytes):
        error = error.decode("utf-8", "surrogateescape")
    if error is not None and not isinstance(error, str):
        raise KongProtocolError(f"reply error must be a string (Kong lower-cases it), got {error!r}")
    return Reply(items[1], error, items[3], notifications, discarded)
