"""Validate a plugin config against its ``Schema`` the way Kong's Admin API would.

The plugin's ``Schema`` is the list of ``{name: definition}`` maps that Kong wraps
as the ``config`` record (docs/protocol.md §1.4). Kong then, for every config it
accepts:

* refuses fields the schema does not declare ("unknown field");
* fills defaults, and sets declared fields without a default to null (a nested
  record without a default is built from its own fields' defaults);
* refuses a missing ``required`` field ("required field missing") and a value
  of the wrong type ("expected a string", "expected an integer" …);
* checks validators: ``one_of``, ``between``, ``gt``, ``len_eq``, ``len_min``,
  ``len_max`` (strings have ``len_min = 1`` unless the schema says otherwise),
  ``match`` (a Lua pattern; the common subset), ``starts_with``, ``eq``.

``validate_config`` returns the config Kong would store (the ``Config`` it sends
in StartInstance, without bookkeeping keys) or raises ``ConfigError``, whose
message reads like Kong's "schema violation (config.x: expected a string)".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kong_pdk.testing.kong.lua import NULL

__all__ = ["ConfigError", "validate_config", "schema_fields"]


class ConfigError(AssertionError):
    """Kong would refuse this plugin config. ``errors`` maps dotted field paths to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        detail = ", ".join(f"config.{k}: {v}" if k else v for k, v in sorted(errors.items()))
        super().__init__(f"schema violation ({detail})")


def schema_fields(schema: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if schema is None:
        return []
    items: Iterable[Any] = [{k: v} for k, v in schema.items()] if isinstance(schema, Mapping) else schema
    out: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1:
            raise TypeError(f"each Schema entry must be a one-key map {{name: definition}}, got {item!r}")
        ((name, definition),) = item.items()
        if not isinstance(definition, Mapping):
            raise TypeError(f"the definition of {name!r} must be a map, got {definition!r}")
        out.append((str(name), definition))
    return out


def validate_config(schema: Any, config: Mapping[str, Any] | None) -> dict[str, Any]:
    errors: dict[str, str] = {}
    value = _record(schema_fields(schema), dict(config or {}), "", errors)
    if errors:
        raise ConfigError(errors)
    assert isinstance(value, dict)
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _record(
    fields: list[tuple[str, Mapping[str, Any]]], value: Mapping[str, Any], path: str, errors: dict[str, str]
) -> dict[str, Any]:
    declared = {name for name, _ in fields}
    out: dict[str, Any] = {}
    for key in value:
        if key not in declared:
            errors[_join(path, str(key))] = "unknown field"
    for name, definition in fields:
        here = _join(path, name)
        item = value.get(name)
        if item is None or item is NULL:
            item = _default(definition)
        if item is None:
            if definition.get("required") is True:
                errors[here] = "required field missing"
            out[name] = NULL
            continue
        out[name] = _check(definition, item, here, errors)
    return out


def _default(definition: Mapping[str, Any]) -> Any:
    if "default" in definition and definition["default"] is not None:
        default = definition["default"]
        return dict(default) if isinstance(default, Mapping) else default
    if definition.get("type") == "record":
        fields = schema_fields(definition.get("fields") or [])
        return {} if fields else None
    return None


def _check(definition: Mapping[str, Any], value: Any, path: str, errors: dict[str, str]) -> Any:
    kind = definition.get("type")
    if kind == "string":
        if not isinstance(value, str):
            errors[path] = "expected a string"
            return value
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors[path] = "expected a boolean"
            return value
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _integral(value):
            errors[path] = "expected an integer"
            return value
        value = int(value)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors[path] = "expected a number"
            return value
    elif kind in ("array", "set"):
        if isinstance(value, Mapping) and not value:
            value = []
        if not isinstance(value, list):
            errors[path] = "expected an array" if kind == "array" else "expected a set"
            return value
        elements = definition.get("elements") or {}
        items = [_check(elements, v, f"{path}.{i + 1}", errors) for i, v in enumerate(value)]
        if kind == "set":
            seen: list[Any] = []
            for v in items:
                if v not in seen:
                    seen.append(v)
            items = seen
        value = items
    elif kind == "map":
        if isinstance(value, list) and not value:
            value = {}
        if not isinstance(value, Mapping):
            errors[path] = "expected a map"
            return value
        keys = definition.get("keys") or {"type": "string"}
        values = definition.get("values") or {}
        value = {
            _check(keys, k, f"{path}.{k}", errors): _check(values, v, f"{path}.{k}", errors)
            for k, v in value.items()
        }
    elif kind == "record":
        if isinstance(value, list) and not value:
            value = {}
        if not isinstance(value, Mapping):
            errors[path] = "expected a record"
            return value
        return _record(schema_fields(definition.get("fields") or []), value, path, errors)
    elif kind is not None:
        errors[path] = f"unknown type {kind!r} in the plugin's Schema"
        return value
    problem = _validators(definition, value)
    if problem:
        errors[path] = problem
    return value


def _integral(value: int | float) -> bool:
    return isinstance(value, int) or (math.isfinite(value) and value == math.floor(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _validators(d: Mapping[str, Any], value: Any) -> str | None:
    if "eq" in d and value != d["eq"]:
        return f"value must be {_fmt(d['eq'])}"
    one_of = d.get("one_of")
    if one_of is not None and value not in one_of:
        return "expected one of: " + ", ".join(_fmt(v) for v in one_of)
    between = d.get("between")
    if between is not None and isinstance(value, (int, float)) and not between[0] <= value <= between[1]:
        return f"value should be between {_fmt(between[0])} and {_fmt(between[1])}"
    if "gt" in d and isinstance(value, (int, float)) and not value > d["gt"]:
        return f"value must be greater than {_fmt(d['gt'])}"
    if isinstance(value, (str, list, dict)):
        length = len(value)
        len_min = d.get("len_min", 1 if isinstance(value, str) else None)
        if "len_eq" in d and length != d["len_eq"]:
            return f"length must be {d['len_eq']}"
        if len_min is not None and length < len_min:
            return f"length must be at least {len_min}"
        if "len_max" in d and length > d["len_max"]:
            return f"length must be at most {d['len_max']}"
    if isinstance(value, str):
        if "starts_with" in d and not value.startswith(d["starts_with"]):
            return f"should start with: {d['starts_with']}"
        match = d.get("match")
        if match is not None and not re.search(_lua_pattern(match), value):
            return f"invalid value: {value}"
    return None


_LUA_CLASSES = {"a": "A-Za-z", "d": "0-9", "l": "a-z", "s": r"\s", "u": "A-Z", "w": "A-Za-z0-9", "x": "0-9A-Fa-f", "p": r"!-/:-@\[-`{-~", "c": r"\x00-\x1f"}


def _lua_pattern(pattern: str) -> str:
    """The common subset of Lua patterns as a Python regex (%a %d %w …, %x escapes, '-' lazy)."""
    out: list[str] = []
    i = 0
    in_set = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            cls = _LUA_CLASSES.get(nxt.lower())
            if cls is not None:
                body = cls if nxt.islower() else None
                if body is None:
                    out.append(f"[^{cls}]" if not in_set else "")
                else:
                    out.append(body if in_set else f"[{body}]")
            else:
                out.append(re.escape(nxt))
            i += 2
            continue
        if ch == "[":
            in_set = True
        elif ch == "]":
            in_set = False
        if ch == "-" and not in_set:
            out.append("*?")
        elif ch in "\\{}|" and not in_set:
            out.append(re.escape(ch))
        else:
            out.append(ch)
        i += 1
    return "".join(out)
