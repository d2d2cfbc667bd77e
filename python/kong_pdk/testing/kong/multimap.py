"""Kong's rewrite of header and query maps before it sends them (docs/protocol.md §6.1).

For ``kong.request.get_headers``, ``kong.request.get_query``, ``kong.response.get_headers``
and ``kong.service.response.get_headers`` Kong turns every value into a list, so that the
server always sees ``map<string, array>``:

* a string ``"v"`` becomes ``["v"]``;
* ``true`` (a bare query flag such as ``?debug``) becomes ``[]``;
* a table (repeated header or arg) is left as it is, booleans inside included;
* a table that ends up empty is sent as the empty **map** ``80``, not ``90``.
"""

from __future__ import annotations

from collections.abc import Mapping

from kong_pdk.testing.kong.luapack import AsMap

__all__ = ["kong_multimap"]


def kong_multimap(value: object) -> object:
    """Apply §6.1 to the first return value; anything but a table passes unchanged."""
    if not isinstance(value, Mapping):
        return value
    out: dict[object, object] = {}
    for key, item in value.items():
        if item is None:
            continue  # a nil value is no key at all in Lua
        if isinstance(item, (str, bytes)):
            out[key] = [item]
        elif item is True:
            out[key] = []
        else:
            out[key] = item
    if not out:
        return AsMap()
    return out
