"""Small helpers shared by the socket-level tests."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
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


def voluntary_switches(pid: int) -> dict[tuple[str, str], int]:
    """Voluntary context switches of each thread of ``pid``, by (thread id,
    thread name): how often each went to sleep (preemptions by other
    processes are the machine's noise)."""
    counts: dict[tuple[str, str], int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except FileNotFoundError:  # the thread just exited
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        counts[(tid, fields["Name"].strip())] = int(fields["voluntary_ctxt_switches"])
    return counts


def switches_over_events(pid: int, emu: KongEmulator, n: int) -> tuple[dict[tuple[str, str], int], int]:
    """Runs ``n`` plain events of behaviours.py one after another (one RPC at
    a time) and returns each thread's voluntary switches meanwhile and the
    number of RPCs."""
    iid = emu.start_instance("behaviours", {})
    answers = case("plain")
    emu.handle_event(iid, "access", answers=answers)  # warm-up
    before = voluntary_switches(pid)
    rpcs = 0
    for _ in range(n):
        result = emu.handle_event(iid, "access", answers=answers)
        assert result.outcome == "ret"
        rpcs += 1 + len(result.calls)
    after = voluntary_switches(pid)
    return {key: after[key] - before.get(key, 0) for key in after}, rpcs


def plugin_class_of(path: Path, module: str) -> type:
    """The ``Plugin`` class of the plugin file ``path``, imported as ``module``
    (registered in ``sys.modules``, where ``inspect`` finds its file)."""
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)
    cls: type = mod.Plugin
    return cls


def plugin_class(folder: Path, name: str, source: str) -> type:
    """The ``Plugin`` class of a module of its own made from ``source`` in
    ``folder`` (``--model auto`` reads its file)."""
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return plugin_class_of(path, name)
