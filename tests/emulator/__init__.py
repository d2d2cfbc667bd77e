"""Tests of the wire-level Kong emulator (kong_pdk.testing)."""
