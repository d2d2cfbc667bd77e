"""Kept for the documented ``kong_pdk.testing.world.default_route``; see ``kong_pdk.testing.fake.world``."""

from __future__ import annotations

from kong_pdk.testing.fake.world import World, consumer, default_route, default_service, kit_uuid

__all__ = ["World", "default_route", "default_service", "consumer", "kit_uuid"]
