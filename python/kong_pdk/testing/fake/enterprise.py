"""Fake Kong Enterprise functions without a model here: JWE answers nil and an error.

A test that needs JWE answers it with an override (``answers={...}``).
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.kong.lua import LuaMulti

FUNCTIONS = FunctionTable()


@FUNCTIONS.define("kong.enterprise_edition.jwe.decode", "kong.enterprise_edition.jwe.decrypt", "kong.enterprise_edition.jwe.encrypt")
def jwe(ex: Exchange, *args: object) -> object:
    return LuaMulti(None, "JWE is not simulated by the test kit; answer it with an override")
