#!/usr/bin/env python3
"""Benchmark scenario "cpu": about 1 ms of pure-Python work, then one
set_header.

The config field "iterations" fixes the loop count per event (benches/run.py
calibrates it once and gives every server the same number, so all do the
same work); without it the loop is calibrated here to "cpu_us" (default
1000) microseconds.
"""

import time

Schema = ({"cpu_us": {"type": "integer"}}, {"iterations": {"type": "integer"}})
version = "0.1.0"
priority = 0


def _burn(n):
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def _iterations_per_ms():
    n = 1000
    while True:
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            _burn(n)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        if best >= 0.02:
            return n / (best * 1000.0)
        n *= 2


class Plugin:
    def __init__(self, config):
        config = config or {}
        iterations = config.get("iterations")
        if not iterations:
            cpu_us = config.get("cpu_us") or 1000
            iterations = _iterations_per_ms() * cpu_us / 1000.0
        self.iterations = max(1, int(iterations))

    def access(self, kong):
        _burn(self.iterations)
        kong.response.set_header("x-cpu", "done")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench-cpu", Plugin, version, priority, Schema)
