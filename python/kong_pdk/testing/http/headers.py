"""HTTP headers as nginx keeps them: an ordered list of (name, value) pairs.

Kong's view of them (docs/protocol.md §6.1, §6.4):

* names are case-insensitive, and ``_`` may stand for ``-`` in a lookup;
* a repeated header is several pairs; single-value getters return the first;
* the table form (``get_headers``) has lower-case names, a string for a single
  value and a list for a repeated one. The emulator then applies the multimap
  rewrite of §6.1 before it goes on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = ["Headers", "HeaderInput", "header_key"]

HeaderInput = Mapping[str, "str | Sequence[str]"] | Iterable[tuple[str, str]] | None


def header_key(name: str) -> str:
    """The lookup form of a header name: lower case, underscores as dashes."""
    return name.lower().replace("_", "-")


class Headers:
    """An ordered, case-insensitive multimap of header names to string values."""

    __slots__ = ("_items",)

    def __init__(self, items: HeaderInput = None) -> None:
        self._items: list[tuple[str, str]] = []
        if items is None:
            return
        if isinstance(items, Headers):
            self._items = list(items._items)
        elif isinstance(items, Mapping):
            for name, value in items.items():
                self.add(name, value)
        else:
            for name, value in items:
                self.add(name, value)

    # -- reading ---------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (what ``get_header`` returns), or ``default``."""
        key = header_key(name)
        for n, v in self._items:
            if header_key(n) == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [v for n, v in self._items if header_key(n) == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == Headers(other).to_dict()
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def names(self) -> list[str]:
        """Distinct lower-case names, in order of first appearance."""
        seen: dict[str, None] = {}
        for n, _ in self._items:
            seen.setdefault(n.lower(), None)
        return list(seen)

    def to_dict(self) -> dict[str, str | list[str]]:
        """Lower-case name -> value, or list of values when repeated."""
        return self.to_lua()

    def to_lua(self, max_headers: int | None = None) -> dict[str, str | list[str]]:
        """The table ``ngx.req.get_headers(max)`` returns: at most ``max`` pairs."""
        out: dict[str, str | list[str]] = {}
        items = self._items if max_headers is None else self._items[:max_headers]
        for n, v in items:
            key = n.lower()
            have = out.get(key)
            if have is None:
                out[key] = v
            elif isinstance(have, list):
                have.append(v)
            else:
                out[key] = [have, v]
        return out

    def copy(self) -> Headers:
        return Headers(self._items)

    # -- writing ---------------------------------------------------------------

    def add(self, name: str, value: str | Sequence[str]) -> None:
        if isinstance(value, (str, bytes)):
            self._items.append((name, _text(value)))
        else:
            for v in value:
                self._items.append((name, _text(v)))

    def set(self, name: str, value: str | Sequence[str]) -> None:
        """Replace every value of ``name`` (keeping the position of the first)."""
        key = header_key(name)
        pos = next((i for i, (n, _) in enumerate(self._items) if header_key(n) == key), None)
        self.remove(name)
        values = [_text(value)] if isinstance(value, (str, bytes)) else [_text(v) for v in value]
        at = len(self._items) if pos is None else min(pos, len(self._items))
        self._items[at:at] = [(name, v) for v in values]

    def setdefault(self, name: str, value: str) -> None:
        if name not in self:
            self.add(name, value)

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [(n, v) for n, v in self._items if header_key(n) != key]

    def __setitem__(self, name: str, value: str | Sequence[str]) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self.remove(name)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        # Raw header bytes travel as surrogate escapes, like Kong's str (docs/protocol.md §11.1).
        return value.decode("utf-8", "surrogateescape")
    return str(value)
