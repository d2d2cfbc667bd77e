"""Small helpers shared by the socket-level tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kong_pdk.testing import KongEmulator


def headers(values: Mapping[str, object]) -> Callable[..., object]:
    """An answer for ``kong.request.get_header(name)`` from a dict (nil when absent)."""
    lowered = {k.lower(): v for k, v in values.items()}
    return lambda name, *rest: lowered.get(str(name).lower())


def case(name: str, **more: object) -> dict[str, object]:
    """Answers that pick a case of tests/plugins/behaviours.py."""
    return {"kong.request.get_header": headers({"x-case": name, **more})}


def status(emu: KongEmulator) -> dict[str, Any]:
    result = emu.call("plugin.GetStatus", [])
    assert isinstance(result, dict)
    return result


def wait_idle(emu: KongEmulator, timeout: float = 10.0) -> dict[str, Any]:
    """Waits until no event is waiting or running, and returns the status."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(emu)
        if st["Events"] == {"Waiting": 0, "Running": 0} or time.monotonic() > deadline:
            return st
        time.sleep(0.02)
