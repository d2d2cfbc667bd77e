"""What differs on Kong's side by version: the version argument and the query command's output (§1.4, §9)."""

from __future__ import annotations

import json

import pytest

from kong_pdk.testing import KongEmulator, KongProtocolError
from kong_pdk.testing.kong.query import read_query_output
from kong_pdk.testing.kong.versions import LATEST, parse_kong_version


def info(name: str) -> dict[str, object]:
    return {"Name": name, "Phases": ["access"], "Priority": 1, "Version": "1.0.0", "Schema": {"fields": []}}


TWO_PLUGINS = [info("first"), info("second"), info("first")]
SHAPES = {
    "array": json.dumps(TWO_PLUGINS),  # what Python and JS servers print
    "object": json.dumps({"Protocol": "MsgPack:1", "Plugins": TWO_PLUGINS}),  # what Go prints
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dumped_plugins_registered_by_each_version(shape: str, kong_version: str) -> None:
    with KongEmulator("/nonexistent.socket", kong_version=kong_version) as emu:
        result = emu.register_plugins(SHAPES[shape])
        if kong_version == "3.9":
            assert result.names == ["first"]  # one plugin per pluginserver_names entry
            assert emu.log == []
        else:
            assert result.names == ["first", "second"]  # every element; a duplicate name is skipped
            assert emu.log == ["Duplicate plugin name [first]"]
        assert sorted(emu.plugins) == sorted(result.names) and emu.protocol == "MsgPack:1"


def test_a_query_output_kong_refuses(kong_version: str) -> None:
    version = parse_kong_version(kong_version)
    for bad in ("not json", '"a string"', "[1]", '[{"Phases": []}]'):
        with pytest.raises(KongProtocolError):
            read_query_output(bad, version)
    if version >= (3, 9):
        with pytest.raises(KongProtocolError, match="no plugin"):
            read_query_output("[]", version)
    else:
        assert read_query_output("[]", version).plugins == []


def test_protobuf_is_taken_and_another_protocol_is_refused_by_the_emulator() -> None:
    with KongEmulator("/nonexistent.socket") as emu:
        emu.register_plugins(json.dumps({"Protocol": "ProtoBuf:1", "Plugins": [info("go")]}))
        assert emu.protocol == "ProtoBuf:1"
        with pytest.raises(ValueError, match="speaks MsgPack:1 and ProtoBuf:1"):
            emu.register_plugins(json.dumps({"Protocol": "Json:1", "Plugins": [info("go")]}))


def test_versions_are_given_as_text_or_a_pair() -> None:
    assert parse_kong_version("3.4") == parse_kong_version("3.4.2") == parse_kong_version((3, 4)) == (3, 4)
    assert KongEmulator("/nonexistent.socket").kong_version == LATEST == (3, 9)
    assert KongEmulator("/nonexistent.socket", kong_version="3.6.1").kong_version == (3, 6)
    for bad in ("3", "three.four", "3.4-lts", (3,), (3, "4")):
        with pytest.raises(ValueError):
            parse_kong_version(bad)  # type: ignore[arg-type]
