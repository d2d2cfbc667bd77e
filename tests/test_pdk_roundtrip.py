"""Every rpc_callable function of pdk-api.json, through the proxy and the socket.

Table-driven over the data file: for each function the plugin calls it with
arguments made from its parameter types, the emulator answers with a value of
its ``wire_return`` type, and the test checks what Kong received and what the
plugin got back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kong_pdk.testing import Bin, KongEmulator

from serving import PLUGINS, wait_for_socket

DATA = json.loads((Path(__file__).parent.parent / "python/kong_pdk/pdk/pdk-api.json").read_text())
CALLABLE = [f for f in DATA["functions"] if f["rpc_callable"]]


def sample_arg(type_: str) -> object:
    first = type_.split(" | ")[0]
    return {
        "str": "a-string",
        "int": 7,
        "float": 1.5,
        "bool": True,
        "bytes": b"\x00\xffraw",
        "Any": "any-value",
    }.get(first, {"k": "v"} if first.startswith("dict") else ["x", "y"])


def sample_answer(wire_return: str) -> tuple[object, object]:
    """(what the emulator answers, what the plugin should receive)."""
    first = wire_return.split(" | ")[0]
    if first == "bytes":
        return Bin(b"\x00\xffbody"), b"\x00\xffbody"
    if first == "dict[str, list[str]]":
        return {"a": ["1", "2"], "b": "3"}, {"a": ["1", "2"], "b": ["3"]}
    value = {
        "None": None,
        "str": "answer",
        "int": 42,
        "float": 2.5,
        "bool": True,
        "Any": "anything",
        "dict[str, Any]": {"id": "x-1", "n": 3},
        "dict[str, int]": {"used": 1},
        "list[dict[str, Any]]": [{"name": "g"}],
    }[first]
    return value, value


def call_args(fn: dict[str, Any]) -> list[object]:
    args = [sample_arg(p["type"]) for p in fn["params"] if not p.get("variadic")]
    if any(p.get("variadic") for p in fn["params"]):
        args += ["extra", 3]
    return args


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KongEmulator]:
    # One server for the whole table (module scope): started by hand here.
    prefix = tmp_path_factory.mktemp("roundtrip")
    log_path = prefix / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(PLUGINS / "every_call.py"), "-p", str(prefix), "--socket-name", "e.socket"],
            stderr=log,
        )
    try:
        wait_for_socket(str(prefix / "e.socket"), proc, log_path)
        with KongEmulator(str(prefix / "e.socket")) as e:
            yield e
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_table_is_what_we_think() -> None:
    assert len(CALLABLE) == 128


@pytest.mark.parametrize("fn", CALLABLE, ids=[f["name"] for f in CALLABLE])
def test_function_round_trips(emu: KongEmulator, fn: dict[str, Any]) -> None:
    name = fn["name"]
    args = call_args(fn)
    encoded = [{"bytes": a.decode("latin-1")} if isinstance(a, bytes) else a for a in args]
    answer, expected = sample_answer(fn["wire_return"])
    meta = {"x-fn": name, "x-args": json.dumps({"list": encoded})}
    answers: dict[str, object] = {name: answer}
    if name == "kong.request.get_header":
        answers[name] = lambda h, *rest: meta[h] if h in meta and not rest else answer
    else:
        answers["kong.request.get_header"] = lambda h: meta[h]
    result = emu.run_phase("every-call", {}, "access", answers=answers)
    # The first two calls fetch the function name and its arguments.
    assert [c.args for c in result.calls[:2]] == [("x-fn",), ("x-args",)]
    call = result.calls[2]
    assert call.method == name
    assert call.found, f"Kong could not resolve {name}"
    assert list(call.args) == args
    if fn["terminal"]:
        assert result.outcome == name.rsplit(".", 1)[1]
        return
    assert result.outcome == "ret"
    shown = result.calls[-1]
    assert shown.method == "kong.response.set_header"
    assert shown.args == ("x-result", repr((expected, None)))
