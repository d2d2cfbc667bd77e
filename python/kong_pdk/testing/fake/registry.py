"""Every fake PDK function, by dotted name: the tables of the modules listed here, merged.

A module of the fake PDK only defines functions into its own ``FUNCTIONS``
table; it reaches the fake PDK by being listed in ``MODULES``. A name defined
by two modules is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType

import kong_pdk.testing.fake.client as client
import kong_pdk.testing.fake.context as context
import kong_pdk.testing.fake.enterprise as enterprise
import kong_pdk.testing.fake.kong_table as kong_table
import kong_pdk.testing.fake.log as log
import kong_pdk.testing.fake.node as node
import kong_pdk.testing.fake.request as request
import kong_pdk.testing.fake.response as response
import kong_pdk.testing.fake.service as service
import kong_pdk.testing.fake.vault as vault
from kong_pdk.testing.fake.function_table import FunctionTable, Impl

__all__ = ["MODULES", "IMPLS", "merged"]

MODULES: tuple[ModuleType, ...] = (
    client,  # kong.client.*, kong.client.tls.*, kong.router.*, kong.plugin.get_id
    request,  # kong.request.*
    response,  # kong.response.* (exit and error are terminal: see terminal.py)
    service,  # kong.service.*, kong.service.request.*, kong.service.response.*
    log,  # kong.log.*, kong.telemetry.log
    context,  # kong.ctx.shared.*, kong.nginx.*
    node,  # kong.node.*, kong.cluster.get_id, kong.ip.is_trusted
    vault,  # kong.vault.*
    kong_table,  # kong.table.*
    enterprise,  # kong.enterprise_edition.jwe.*
)


def merged(tables: Iterable[Mapping[str, Impl]]) -> Mapping[str, Impl]:
    out = FunctionTable()
    for table in tables:
        for name, impl in table.items():
            out.add(name, impl)  # raises when two modules define one name
    return out


IMPLS: Mapping[str, Impl] = merged(module.FUNCTIONS for module in MODULES)
