"""The fake Kong PDK: Kong's PDK functions answered from one request's state.

``FakePdk`` (``pdk``) hands the emulator one answer per PDK function, checked
against Kong's phase rules (``phase_rules``, read from pdk-api.json as the
native core reads them) and run on the request's ``Exchange``, inside a
``World`` (route, service, consumers, vault …). The functions live in one
module per namespace, each with its own ``FUNCTIONS`` table; ``registry``
lists those modules. ``terminal`` applies ``kong.response.exit``/``error``.
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange, LogEntry, TlsState
from kong_pdk.testing.fake.pdk import FakePdk, Violation
from kong_pdk.testing.fake.world import World

__all__ = ["Exchange", "FakePdk", "LogEntry", "TlsState", "Violation", "World"]
