"""Fake ``kong.table.*``: Kong's table helpers, on the values that crossed the wire."""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable

FUNCTIONS = FunctionTable()


@FUNCTIONS.define("kong.table.new")
def table_new(ex: Exchange, *args: object) -> object:
    return {}


@FUNCTIONS.define("kong.table.clear")
def table_clear(ex: Exchange, *args: object) -> None:
    return None


@FUNCTIONS.define("kong.table.merge")
def table_merge(ex: Exchange, *args: object) -> object:
    merged: dict[object, object] = {}
    for table in args[:2]:
        if isinstance(table, dict):
            merged.update(table)
        elif isinstance(table, list):
            merged.update({i + 1: v for i, v in enumerate(table)})
    return merged
