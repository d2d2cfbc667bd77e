"""Kept for the documented ``from kong_pdk.testing.schema import ConfigError``; see ``kong_pdk.testing.kit.schema``."""

from __future__ import annotations

from kong_pdk.testing.kit.schema import ConfigError, schema_fields, validate_config

__all__ = ["ConfigError", "validate_config", "schema_fields"]
