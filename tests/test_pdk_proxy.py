"""The proxy's runtime checks: unknown names, wrong phases, arguments (issue: typed PDK)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kong_pdk.testing import KongEmulator

from serving import Served

PLUGIN = '''
class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        out = []
        for attempt in (
            lambda: kong.reqest.get_header("host"),
            lambda: kong.request.get_heder("host"),
            lambda: kong.request("x"),
            lambda: kong.tracing.start_span("span"),
            lambda: kong.service.set_tls_cert_key("a", "b"),
            lambda: kong.request.get_header("a", "b", "c"),
            lambda: kong.request.get_header(nme="host"),
        ):
            try:
                attempt()
                out.append("no error")
            except Exception as e:
                out.append(type(e).__name__ + ": " + str(e))
        kong.response.set_header("x-errors", "\\n".join(out))
        kong.log("callable log", {"k": object()})
        kong.request.get_header(name="host")
        kong.response.exit(status=403, body={"message": "json body"}, headers={"x-n": 1, "x-l": ["a", "b"]})

    def log(self, kong):
        kong.request.get_raw_body()  # Kong does not allow this in log


from kong_pdk.cli import start_dedicated_server
start_dedicated_server("proxy", Plugin, "1.0")
'''


def test_proxy_checks(serve: Callable[..., Served], tmp_path: Path) -> None:
    plugin = tmp_path / "proxy.py"
    plugin.write_text(PLUGIN)
    served = serve(plugin)
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("proxy", {}, "access", answers={"kong.request.get_header": "h"})
        # Names the PDK does not have are sent as they are (the official
        # package does the same; Kong logs them and answers nil), after a
        # warning naming the closest real one.
        assert [c.method for c in result.calls[:2]] == ["kong.reqest.get_header", "kong.request.get_heder"]
        result.calls[:2] = []
        errors = str(result.calls[0].args[1]).split("\n")
        assert errors[:2] == ["no error", "no error"]
        assert errors[2] == "TypeError: kong.request is a namespace of the Kong PDK, not a function"
        assert errors[3].startswith("TypeError: kong.tracing.start_span cannot be called from an external plugin")
        assert errors[4].startswith("TypeError: kong.service.set_tls_cert_key cannot be called from an external plugin")
        assert errors[5].startswith("TypeError: kong.request.get_header() takes at most 1 arguments")
        assert errors[6].startswith("TypeError: kong.request.get_header() got an unexpected keyword argument 'nme'")
        # kong.log itself is callable and takes anything.
        assert result.calls[1].method == "kong.log"
        assert result.calls[1].args[0] == "callable log"
        assert "<object object" in str(result.calls[1].args[1])
        # Keyword arguments bind by the Lua parameter names.
        assert result.calls[2].args == ("host",)
        assert result.outcome == "exit"
        assert (result.status, result.body, result.headers) == (
            403,
            {"message": "json body"},
            {"x-n": 1, "x-l": ["a", "b"]},
        )
        emu.run_phase("proxy", {}, "log")
    served.wait_log("kong.request.get_raw_body called in the log phase")
    served.wait_log("kong.reqest is not a Kong PDK function or namespace; did you mean kong.request?")
    served.wait_log("kong.request.get_heder is not a Kong PDK function or namespace; did you mean kong.request.get_header?")


RESPONSE_EXIT_PLUGIN = '''
class Plugin:
    def __init__(self, config):
        pass

    def response(self, kong):
        kong.response.exit(502, "replaced in the response phase")

    def log(self, kong):
        kong.request.get_raw_body()  # a real wrong-phase call: its warning shows the log is written


from kong_pdk.cli import start_dedicated_server
start_dedicated_server("late-exit", Plugin, "1.0")
'''


def test_exit_in_the_response_phase_is_not_warned(serve: Callable[..., Served], tmp_path: Path) -> None:
    # Kong's check_phase for exit/error includes response; the core reads that from
    # pdk-api.json, the same rule the test kit applies (tests/kit/test_pdk_coverage.py).
    plugin = tmp_path / "late_exit.py"
    plugin.write_text(RESPONSE_EXIT_PLUGIN)
    served = serve(plugin)
    with KongEmulator(served.socket) as emu:
        result = emu.run_phase("late-exit", {}, "response")
        assert result.outcome == "exit" and result.status == 502
        emu.run_phase("late-exit", {}, "log")
    log = served.wait_log("kong.request.get_raw_body called in the log phase")
    assert "kong.response.exit called in" not in log


REUSE_PLUGIN = '''
class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        built = "".join(["req", "uest"])  # a name that is not the interned one
        same = [
            kong.request is kong.request,
            getattr(kong, built) is kong.request,
            kong.request.get_header is kong.request.get_header,
            # A new string object every time: past the proxy's cap on
            # remembered names these take the slow path, still to one child.
            all(getattr(kong, "".join(["req", "uest"])) is kong.request for _ in range(100)),
        ]
        kong.response.set_header("x-same", ",".join(str(s) for s in same))
        getattr(kong, built).get_header("host")
        kong.request.get_header("host")


from kong_pdk.cli import start_dedicated_server
start_dedicated_server("reuse", Plugin, "1.0")
'''


def test_a_proxy_hands_out_each_child_once_per_event(serve: Callable[..., Served], tmp_path: Path) -> None:
    # The children cache (src/pdk/proxy.rs): one object per path, whichever
    # string object names it, and calls through either reach Kong the same.
    plugin = tmp_path / "reuse.py"
    plugin.write_text(REUSE_PLUGIN)
    served = serve(plugin)
    with KongEmulator(served.socket) as emu:
        for _ in range(2):
            result = emu.run_phase("reuse", {}, "access", answers={"kong.request.get_header": "h"})
            assert result.calls[0].args == ("x-same", "True,True,True,True")
            assert [(c.method, c.args) for c in result.calls[1:]] == [
                ("kong.request.get_header", ("host",)),
                ("kong.request.get_header", ("host",)),
            ]
            assert result.outcome == "ret"
