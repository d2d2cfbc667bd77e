"""The example plugins, loaded with the kit's ``kong`` fixture (pytest plugin ``kong_pdk``)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
