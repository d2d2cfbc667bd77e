"""``kong.ip.is_trusted``: is an address inside Kong's ``trusted_ips``?

``trusted_ips`` holds addresses and CIDR blocks; ``0.0.0.0/0`` and ``::/0``
(Kong's ``unix:``-less "trust all") match every address of their family.
An address that does not parse is not trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["is_trusted"]


def is_trusted(address: str, trusted: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    for entry in trusted:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            return True
    return False
