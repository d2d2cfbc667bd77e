"""Kong's encoding, byte for byte, from the examples of protocol.md §3, §4.3 and §6.1."""

from __future__ import annotations

import struct

import msgpack
import pytest

from kong_pdk.testing import NULL, AsMap, Bin, pack
from kong_pdk.testing.kong.cjson import cjson_encode
from kong_pdk.testing.kong.multimap import kong_multimap


def s(text: str) -> bytes:
    """A fixstr: header byte then the text."""
    data = text.encode()
    assert len(data) < 32
    return bytes([0xA0 | len(data)]) + data


# -- protocol.md §3.1 ----------------------------------------------------------------------


def test_start_instance_request_matches_3_1() -> None:
    config = '{"message":"hi","__seq__":3}'
    assert len(config) == 28
    wire = pack([0, 1, "plugin.StartInstance", [{"Name": "py-hello", "Config": config}]])
    expected = (
        b"\x94\x00\x01\xb4plugin.StartInstance\x91\x82\xa4Name\xa8py-hello\xa6Config\xbc"
        + config.encode()
    )
    assert wire == expected


def test_start_instance_result_map_matches_3_1() -> None:
    # The result part of the server's reply; a Lua table would pack the same way.
    wire = pack({"Name": "py-hello", "Id": 0, "Config": {"message": "hi"}, "StartTime": 1700000000.5})
    expected = (
        b"\x84\xa4Name\xa8py-hello\xa2Id\x00\xa6Config\x81\xa7message\xa2hi"
        b"\xa9StartTime\xcb\x41\xd9\x54\xfc\x40\x20\x00\x00"
    )
    assert wire == expected


def test_notification_matches_3_1() -> None:
    assert pack([2, "serverPid", 4242]) == b"\x93\x02\xa9serverPid\xcd\x10\x92"


# -- protocol.md §4.3 ----------------------------------------------------------------------


def test_handle_event_request_matches_4_3() -> None:
    wire = pack([0, 2, "plugin.HandleEvent", [{"InstanceId": 0, "EventName": "access"}]])
    assert wire == bytes.fromhex("94 00 02 b2") + b"plugin.HandleEvent" + bytes.fromhex(
        "91 82 aa"
    ) + b"InstanceId" + b"\x00\xa9EventName\xa6access"


def test_step_request_matches_4_3() -> None:
    wire = pack([0, 3, "plugin.Step", [{"EventId": 0, "Data": "example.com"}]])
    assert wire == b"\x94\x00\x03\xabplugin.Step\x91\x82\xa7EventId\x00\xa4Data\xabexample.com"


def test_step_with_nil_result_has_no_data_key_4_3() -> None:
    wire = pack([0, 4, "plugin.Step", [{"EventId": 0, "Data": None}]])
    assert wire == b"\x94\x00\x04\xabplugin.Step\x91\x81\xa7EventId\x00"


def test_terminal_reply_result_matches_4_3() -> None:
    result = {
        "Data": {"Method": "kong.response.exit", "Args": [403, "denied", {"x-why": "nope"}]},
        "EventId": 0,
    }
    expected = (
        b"\x82\xa4Data\x82\xa6Method\xb2kong.response.exit\xa4Args\x93\xcd\x01\x93\xa6denied"
        b"\x81\xa5x-why\xa4nope\xa7EventId\x00"
    )
    assert pack(result) == expected


def test_close_instance_request_matches_4_3() -> None:
    assert pack([0, 6, "plugin.CloseInstance", [0]]) == b"\x94\x00\x06\xb4plugin.CloseInstance\x91\x00"


# -- protocol.md §3.2: strings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\xa0"),
        (31, b"\xbf"),
        (32, b"\xda\x00\x20"),
        (124, b"\xda\x00\x7c"),
        (255, b"\xda\x00\xff"),
        (65535, b"\xda\xff\xff"),
        (65536, b"\xdb\x00\x01\x00\x00"),
    ],
)
def test_strings_never_use_str8(length: int, header: bytes) -> None:
    wire = pack("x" * length)
    assert wire == header + b"x" * length
    assert wire[0] != 0xD9


def test_bytes_are_lua_strings_and_go_out_as_str() -> None:
    raw = b"caf\xe9 \xff"  # not UTF-8: Kong sends the bytes in a str anyway (§11.1)
    assert pack(raw) == bytes([0xA0 | len(raw)]) + raw
    assert pack(b"y" * 40) == b"\xda\x00\x28" + b"y" * 40


def test_surrogate_escaped_str_goes_back_byte_for_byte() -> None:
    text = b"\xff\xfeok".decode("utf-8", "surrogateescape")
    assert pack(text) == b"\xa4\xff\xfeok"


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, b"\xc4\x00"), (255, b"\xc4\xff"), (256, b"\xc5\x01\x00"), (70000, b"\xc6\x00\x01\x11\x70")],
)
def test_raw_bodies_go_out_as_bin(size: int, header: bytes) -> None:
    assert pack(Bin(b"\x00" * size)) == header + b"\x00" * size


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc 80"),
        (255, "cc ff"),
        (256, "cd 01 00"),
        (65535, "cd ff ff"),
        (65536, "ce 00 01 00 00"),
        (2**32, "cf 00 00 00 01 00 00 00 00"),
        (2**64 - 1, "cf ff ff ff ff ff ff ff ff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0 df"),
        (-128, "d0 80"),
        (-129, "d1 ff 7f"),
        (-32768, "d1 80 00"),
        (-32769, "d2 ff ff 7f ff"),
        (-(2**31), "d2 80 00 00 00"),
        (-(2**31) - 1, "d3 ff ff ff ff 7f ff ff ff"),
        (2.0, "02"),
        (-0.0, "00"),
        (403.0, "cd 01 93"),
        (-5.0, "fb"),
    ],
)
def test_integral_numbers_use_the_smallest_integer_type(value: float, wire: str) -> None:
    assert pack(value) == bytes.fromhex(wire)


@pytest.mark.parametrize("value", [1.1, 0.5, -2.25, 1e20, float("inf"), 2.0**64])
def test_other_numbers_are_float64(value: float) -> None:
    assert pack(value) == b"\xcb" + struct.pack(">d", value)


def test_booleans_and_nils() -> None:
    assert pack(True) == b"\xc3"
    assert pack(False) == b"\xc2"
    assert pack(None) == b"\xc0"
    assert pack(NULL) == b"\xc0"


# -- tables (§3.2, §11.3) ----------------------------------------------------------------------


def test_empty_tables_are_empty_arrays() -> None:
    assert pack({}) == b"\x90"
    assert pack([]) == b"\x90"
    assert pack({"nested": {}}) == b"\x81\xa6nested\x90"
    assert pack({"gone": None}) == b"\x90"  # the only key was nil: an empty table


def test_keys_one_to_n_make_an_array() -> None:
    assert pack({1: "a", 2: "b"}) == b"\x92\xa1a\xa1b"
    assert pack({2: "b", 1: "a"}) == b"\x92\xa1a\xa1b"
    assert pack({1.0: "a", 2: "b"}) == b"\x92\xa1a\xa1b"


def test_holes_make_a_map_with_number_keys() -> None:
    assert pack({1: "a", 3: "c"}) == b"\x82\x01\xa1a\x03\xa1c"
    assert pack([1, None, 3]) == b"\x82\x01\x01\x03\x03"
    assert pack([1, None]) == b"\x91\x01"  # a trailing nil is no element at all
    assert pack({0: "zero"}) == b"\x81\x00\xa4zero"
    assert pack({True: "x"}) == b"\x81\xc3\xa1x"  # a boolean key is no index


def test_nil_values_vanish_and_cjson_null_stays() -> None:
    assert pack({"a": 1, "b": None}) == b"\x81\xa1a\x01"
    assert pack({"custom_id": NULL}) == b"\x81\xa9custom_id\xc0"
    assert pack({"outer": {"inner": None, "kept": NULL}}) == b"\x81\xa5outer\x81\xa4kept\xc0"


def test_as_map_forces_a_map_even_when_empty() -> None:
    assert pack(AsMap()) == b"\x80"
    assert pack(AsMap({1: "a"})) == b"\x81\x01\xa1a"


def test_large_containers_use_16_and_32_bit_headers() -> None:
    assert pack(list(range(16)))[:3] == b"\xdc\x00\x10"
    assert pack({f"k{i}": i for i in range(16)})[:3] == b"\xde\x00\x10"
    assert pack(list(range(1, 70000)))[:5] == b"\xdd\x00\x01\x11\x6f"


def test_unknown_python_types_are_refused() -> None:
    with pytest.raises(TypeError):
        pack({1, 2})
    with pytest.raises(TypeError):
        pack(object())


def test_stock_msgpack_reads_what_we_write() -> None:
    value = {"a": [1, -200, 3.5, "x" * 40, True, None], "b": {"c": b"\xffraw"}, "d": Bin(b"\x00\x01")}
    decoded = msgpack.unpackb(pack(value), raw=False, unicode_errors="surrogateescape")
    assert decoded == {
        "a": [1, -200, 3.5, "x" * 40, True],
        "b": {"c": b"\xffraw".decode("utf-8", "surrogateescape")},
        "d": b"\x00\x01",
    }


# -- §6.1 multimaps ----------------------------------------------------------------------------


def test_multimap_example_of_6_1() -> None:
    wire = pack(kong_multimap({"accept": "*/*", "x-flag": True}))
    assert wire == b"\x82\xa6accept\x91\xa3*/*\xa6x-flag\x90"


def test_multimap_keeps_lists_and_sends_empty_as_map() -> None:
    assert kong_multimap({"a": ["1", "2"], "b": [True, "1"], "k": ""}) == {
        "a": ["1", "2"],
        "b": [True, "1"],
        "k": [""],
    }
    assert pack(kong_multimap({})) == b"\x80"
    assert pack(kong_multimap({"only-nil": None})) == b"\x80"
    assert kong_multimap(None) is None


# -- cjson for Config (§6.5) ---------------------------------------------------------------------


def test_cjson_quirks() -> None:
    assert cjson_encode({"url": "http://x/y"}) == '{"url":"http:\\/\\/x\\/y"}'
    assert cjson_encode({"n": 3, "f": 0.5, "big": 1e14, "whole": 2.0}) == '{"n":3,"f":0.5,"big":1e+14,"whole":2}'
    assert cjson_encode({"e": {}, "l": [], "gone": None, "null": NULL}) == '{"e":{},"l":[],"null":null}'
    assert cjson_encode({"c": "a\x01\n\t\x7f\"\\"}) == '{"c":"a\\u0001\\n\\t\\u007f\\"\\\\"}'
    assert cjson_encode({1: "a", 2: "b"}) == '["a","b"]'
    assert cjson_encode({1: "a", 3: "c"}) == '["a",null,"c"]'
    assert cjson_encode({1: "a", "k": "v"}) == '{"1":"a","k":"v"}'
    assert cjson_encode(["é"]) == '["é"]'  # UTF-8 is copied, not escaped
    with pytest.raises(ValueError, match="excessively sparse"):
        cjson_encode({20: "x"})
    with pytest.raises(ValueError, match="NaN or Infinity"):
        cjson_encode({"x": float("nan")})
