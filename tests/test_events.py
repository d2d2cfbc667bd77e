"""Events through the real socket: the Step loop, endings, values (protocol.md §3–§6)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kong_pdk.testing import Bin, KongEmulator, LuaMulti

from helpers import case, headers, wait_idle
from serving import Served


@pytest.fixture
def server(serve: Callable[..., Served]) -> Served:
    return serve("behaviours.py")


@pytest.fixture
def emu(server: Served) -> KongEmulator:
    with KongEmulator(server.socket) as e:
        yield e  # type: ignore[misc]


def access(emu: KongEmulator, answers: dict[str, object], config: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return emu.run_phase("behaviours", config or {"message": "hi"}, "access", answers=answers)


def test_hello_example_serves_a_request(serve: Callable[..., Served]) -> None:
    served = serve("py-hello.py")
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase(
            "py-hello",
            {"message": "bonjour"},
            "access",
            answers={"kong.request.get_header": headers({"host": "example.com"})},
        )
    assert result.outcome == "ret"
    assert result.methods == [
        "kong.request.get_header",
        "kong.response.set_header",
        "kong.response.set_header",
    ]
    assert result.calls[1].args == ("x-hello-from-python", "Python says bonjour to example.com")
    assert result.calls[2].args[0] == "x-python-pid"
    assert result.calls[2].args[1] == str(served.proc.pid)
    assert emu.discarded_bytes == 0
    assert emu.server_pid == served.proc.pid


def test_exit_ends_the_event_and_code_after_it_never_runs(emu: KongEmulator) -> None:
    result = access(emu, case("exit"))
    assert result.outcome == "exit"
    assert (result.status, result.body, result.headers) == (403, "denied", {"x-why": "exit"})
    assert "kong.log.err" not in result.methods
    st = wait_idle(emu)
    assert st["Events"] == {"Waiting": 0, "Running": 0}


def test_exit_with_none_body_keeps_its_headers(emu: KongEmulator) -> None:
    # Lua would cut [401, nil, {...}] to [401] (protocol.md §11.2): we send "".
    result = access(emu, case("exit-none-body"))
    assert result.terminal is not None
    assert (result.status, result.body, result.headers) == (401, "", {"x-a": "1"})


def test_except_exception_cannot_swallow_exit(emu: KongEmulator) -> None:
    result = access(emu, case("raise-after-catch-all"))
    assert result.outcome == "exit" and result.status == 200
    assert "kong.log.err" not in result.methods


def test_raising_handler_fails_closed_with_500_and_reaches_kongs_log(
    server: Served, emu: KongEmulator
) -> None:
    result = access(emu, case("raise"))
    assert result.outcome == "error"
    assert result.status == 500
    (log_call,) = result.calls_to("kong.log.err")
    assert "RuntimeError: plugin bug" in str(log_call.args[0])
    # The traceback goes to our stderr.
    text = server.wait_log("RuntimeError: plugin bug")
    assert "Traceback" in text
    # And the server goes on.
    assert access(emu, case("plain")).outcome == "ret"


def test_raise_in_rewrite_is_a_500_too(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "rewrite", answers=case("raise"))
    assert result.outcome == "error" and result.status == 500
    assert "KeyError" in str(result.calls_to("kong.log.err")[0].args[0])


def test_raise_where_no_response_can_be_sent_ends_with_ret(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "response", answers={"kong.response.get_status": 500})
    assert result.outcome == "ret"
    assert result.methods == ["kong.response.get_status", "kong.log.err"]


def test_log_phase(emu: KongEmulator) -> None:
    result = emu.run_phase("behaviours", {}, "log")
    assert result.outcome == "ret"
    assert result.calls[0].method == "kong.log.notice"


def test_lua_style_returns_value_and_error_tuple(emu: KongEmulator) -> None:
    result = access(emu, case("error-tuple"))
    assert result.calls_to("kong.response.set_header")[0].args == ("x-result", "(None, None)")


def test_step_error_gives_lua_style_error_tuple(serve: Callable[..., Served]) -> None:
    # Kong <= 2.8 sends plugin.StepError for (nil, err) results (protocol.md §5.3).
    served = serve("behaviours.py")
    answers = {
        "kong.request.get_header": lambda name: "error-tuple"
        if name == "x-case"
        else LuaMulti(None, "header not found")
    }
    with KongEmulator(served.socket, kong_version=(2, 8)) as emu:
        result = emu.run_phase("behaviours", {}, "access", answers=answers)
    assert result.calls[1].step_method == "plugin.StepError"
    assert result.calls_to("kong.response.set_header")[0].args == (
        "x-result",
        "(None, 'header not found')",
    )


def test_python_style_raises_pdk_exception(serve: Callable[..., Served], tmp_path) -> None:  # type: ignore[no-untyped-def]
    plugin = tmp_path / "pystyle.py"
    plugin.write_text(
        "from kong_pdk.exception import PDKException\n"
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def access(self, kong):\n"
        "        host = kong.request.get_header('host')\n"
        "        try:\n"
        "            kong.request.get_header('x-missing')\n"
        "        except PDKException as e:\n"
        "            kong.response.set_header('x-caught', str(e))\n"
        "        kong.response.set_header('x-host', host)\n"
        "from kong_pdk.cli import start_dedicated_server\n"
        "start_dedicated_server('pystyle', Plugin, '1.0')\n"
    )
    served = serve(plugin, "--no-lua-style")
    answers = {"kong.request.get_header": lambda n: "h.test" if n == "host" else LuaMulti(None, "missing")}
    with KongEmulator(served.socket, kong_version=(2, 8)) as emu:
        result = emu.run_phase("pystyle", {}, "access", answers=answers)
    sets = [c.args for c in result.calls_to("kong.response.set_header")]
    assert sets == [("x-caught", "missing"), ("x-host", "h.test")]


def test_step_without_data_is_none(emu: KongEmulator) -> None:
    result = access(emu, {"kong.request.get_header": headers({"x-case": "echo"})})
    # x-value absent: Kong sends Step with no Data key (protocol.md §4.3).
    assert result.calls[1].has_data is False
    assert result.calls_to("kong.response.set_header")[1].args == ("x-echo-type", "NoneType")


@pytest.mark.parametrize(
    "value",
    [
        "a" * 40,  # str16 for a short string: Kong never sends str8 (§3.2)
        "caf\xe9 \u2603",
        b"\x80\xffraw-bytes".decode("utf-8", "surrogateescape"),  # non-UTF-8 Lua string (§11.1)
        "",
    ],
)
def test_strings_round_trip_byte_for_byte(emu: KongEmulator, value: str) -> None:
    raw = value.encode("utf-8", "surrogateescape")
    result = access(emu, {"kong.request.get_header": headers({"x-case": "echo", "x-value": raw})})
    echoed = result.calls_to("kong.response.set_header")[0].args[1]
    assert isinstance(echoed, str)
    assert echoed.encode("utf-8", "surrogateescape") == raw
    assert result.calls_to("kong.response.set_header")[1].args[1] == "str"


def test_integral_float_arrives_as_int(emu: KongEmulator) -> None:
    result = access(emu, {"kong.request.get_header": headers({"x-case": "echo", "x-value": 2.0})})
    assert result.calls_to("kong.response.set_header")[1].args[1] == "int"


def test_raw_body_is_bytes_both_ways(emu: KongEmulator) -> None:
    body = bytes(range(256))
    result = access(emu, {**case("raw-body"), "kong.request.get_raw_body": Bin(body)})
    assert result.calls_to("kong.response.set_header")[0].args == ("x-body-type", "bytes")
    assert result.outcome == "exit" and result.body == body


def test_multimap_and_empty_map(emu: KongEmulator) -> None:
    result = access(emu, {**case("multimap"), "kong.request.get_headers": {"accept": "*/*", "x-a": ["1", "2"]}})
    assert result.calls[1].step_method == "plugin.StepMultiMap"
    assert result.calls_to("kong.response.set_header")[0].args[1] == repr(
        [("accept", ["*/*"]), ("x-a", ["1", "2"])]
    )


def test_log_arguments_that_msgpack_cannot_carry_are_sent_as_str(emu: KongEmulator) -> None:
    result = access(emu, case("log-anything"))
    (call,) = result.calls_to("kong.log.info")
    assert call.args[0] == "values:"
    assert str(call.args[1]).startswith("<object object at")
    assert call.args[2] == "{1, 2}"
    assert call.args[3:] == ("None", 3)


def test_none_before_a_later_argument_is_refused_not_cut(emu: KongEmulator) -> None:
    result = access(emu, case("none-in-middle"))
    message = result.calls_to("kong.response.set_header")[0].args[1]
    assert "argument 1 is None" in str(message) and "kong.service.request.set_header" in str(message)
    assert "kong.service.request.set_header" not in result.methods


def test_config_hides_kongs_bookkeeping_keys(emu: KongEmulator) -> None:
    iid = emu.start_instance(
        "behaviours",
        {"message": "m"},
        route_id="r-1",
        service_id="s-1",
        consumer_id="c-1",
        instance_name="named",
    )
    result = emu.handle_event(iid, "access", answers=case("config"))
    shown = result.calls_to("kong.response.set_header")[0].args[1]
    # route_id is declared in the plugin's Schema, so it stays; the rest go.
    assert shown == repr([("message", "m"), ("route_id", "r-1")])
    status = emu.call("plugin.InstanceStatus", [iid])
    assert isinstance(status, dict)
    assert status["Config"] == {"message": "m", "route_id": "r-1"}
    assert status["Name"] == "behaviours" and status["Id"] == iid


def test_a_kong_object_kept_after_its_event_is_refused(emu: KongEmulator) -> None:
    access(emu, case("after-event"))
    result = access(emu, case("use-kept"))
    assert result.calls_to("kong.response.set_header")[0].args == ("x-error", "PDKException")


def test_steps_of_one_event_on_different_connections(emu: KongEmulator) -> None:
    iid = emu.start_instance("behaviours", {})
    with emu.connection() as a, emu.connection() as b:
        first = a.call("plugin.HandleEvent", [{"InstanceId": iid, "EventName": "access"}])
        assert isinstance(first, dict)
        assert first["Data"] == {"Method": "kong.request.get_header", "Args": ["x-case"]}
        second = b.call("plugin.Step", [{"EventId": first["EventId"], "Data": "plain"}])
        assert isinstance(second, dict)
        assert second["Data"]["Method"] == "kong.response.set_header"
        third = a.call("plugin.StepMultiMap", [{"EventId": first["EventId"]}])
        assert third == {"Data": "ret", "EventId": first["EventId"]}


@pytest.mark.parametrize(
    "header, style_line, expected",
    [
        # The annotation alone picks python style ...
        ("import kong_pdk.pdk.kong as kong\n", "    def access(self, kong: kong.PythonStyleKong) -> None:\n", "'h.test'"),
        # ... a string annotation too ...
        ("", "    def access(self, kong: 'kong_pdk.pdk.kong.PythonStyleKong') -> None:\n", "'h.test'"),
        # ... and the lua-style annotation keeps the default.
        ("import kong_pdk.pdk.kong as kong\n", "    def access(self, kong: kong.kong) -> None:\n", "('h.test', None)"),
    ],
)
def test_error_style_follows_the_handler_annotation(
    serve: Callable[..., Served], tmp_path, header: str, style_line: str, expected: str  # type: ignore[no-untyped-def]
) -> None:
    assert styled_plugin_saw(serve, tmp_path, header, style_line) == expected


@pytest.mark.parametrize(
    "header, style_line, expected",
    [
        # An async handler annotated with the async python-style class gets python style ...
        (
            "import kong_pdk.pdk.kong as kong\n",
            "    async def access(self, kong: kong.AsyncPythonStyleKong) -> None:\n",
            "'h.test'",
        ),
        # ... by a string annotation too ...
        ("", "    async def access(self, kong: 'kong_pdk.pdk.kong.AsyncPythonStyleKong') -> None:\n", "'h.test'"),
        # ... and the async lua-style class keeps the default.
        (
            "import kong_pdk.pdk.kong as kong\n",
            "    async def access(self, kong: kong.AsyncLuaStyleKong) -> None:\n",
            "('h.test', None)",
        ),
    ],
)
def test_error_style_follows_an_async_handler_annotation(
    serve: Callable[..., Served], tmp_path, header: str, style_line: str, expected: str  # type: ignore[no-untyped-def]
) -> None:
    assert styled_plugin_saw(serve, tmp_path, header, style_line) == expected


def styled_plugin_saw(serve: Callable[..., Served], tmp_path, header: str, style_line: str) -> object:  # type: ignore[no-untyped-def]
    """Serve a plugin whose access handler starts with ``style_line``; what get_header gave it."""
    aw = "await " if "async def" in style_line else ""
    plugin = tmp_path / "styled.py"
    plugin.write_text(
        header + "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        + style_line
        + f"        got = {aw}kong.request.get_header('host')\n"
        f"        {aw}kong.response.set_header('x-got', repr(got))\n"
        "from kong_pdk.cli import start_dedicated_server\n"
        "start_dedicated_server('styled', Plugin, '1.0')\n"
    )
    served = serve(plugin)
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("styled", {}, "access", answers={"kong.request.get_header": "h.test"})
    return result.calls_to("kong.response.set_header")[0].args[1]
