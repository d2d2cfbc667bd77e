"""Every function Kong can be asked over RPC has a fake, and the fake obeys Kong's phase rules.

Table-driven over pdk-api.json: the function list and each function's phases.
"""

from __future__ import annotations

import json

import pytest
from kit_helpers import call

from kong_pdk.testing.fake.phase_rules import LOG_TIMER_OK, rules
from kong_pdk.testing.fake.registry import IMPLS
from kong_pdk.testing.kit.request_result import KitFailure
from kong_pdk.testing.kong.pdk_facts import PDK_API_JSON

FUNCTIONS = json.loads(PDK_API_JSON.read_text())["functions"]
CALLABLE = sorted(f["name"] for f in FUNCTIONS if f["rpc_callable"])
HTTP = ("rewrite", "access", "response", "log")


def test_every_rpc_callable_function_has_a_fake() -> None:
    # exit and error are terminal: Kong never answers them; ``terminal`` applies them.
    assert sorted([*IMPLS, "kong.response.error", "kong.response.exit"]) == CALLABLE


def _forbidden_phase(name: str) -> str | None:
    rule = rules()[name]
    for phase in HTTP:
        if rule.phases is not None and phase not in rule.phases:
            return phase
    return None


FORBIDDEN = [(n, p) for n in CALLABLE if (p := _forbidden_phase(n)) and not rules()[n].enterprise]


@pytest.mark.parametrize(("name", "phase"), FORBIDDEN, ids=[f"{n}@{p}" for n, p in FORBIDDEN])
def test_a_call_outside_its_phases_fails_the_test(name: str, phase: str) -> None:
    # Arguments are irrelevant: Kong checks the phase before anything else.
    with pytest.raises(KitFailure) as info:
        call(phase, name)
    message = str(info.value)
    assert name in message and f"in the {phase} phase" in message
    assert info.value.result.events[phase].outcome in ("lua_error", "exit", "error")


LOG_REFUSED = [
    n
    for n in CALLABLE
    if n not in LOG_TIMER_OK
    and rules()[n].phases is not None
    and "log" in (rules()[n].phases or ())
    and not n.startswith("kong.log")
    and not rules()[n].enterprise
]


@pytest.mark.parametrize("name", LOG_REFUSED)
def test_log_phase_allows_only_what_kongs_snapshot_answers(name: str) -> None:
    with pytest.raises(KitFailure, match="timer"):
        call("log", name)


def test_lenient_mode_shows_kongs_500_for_a_wrong_phase_call() -> None:
    res = call("access", "kong.response.get_status", strict=False, headers={"accept": "text/plain"})
    assert res.events["access"].outcome == "lua_error"
    assert res.client_response is not None
    assert res.client_response.status == 500
    assert res.client_response.headers["content-type"] == "text/plain; charset=utf-8"
    assert res.client_response.body.startswith(b"An unexpected error occurred\nrequest_id: ")
    assert res.service_request is None
    assert res.violations and "kong.response.get_status" in str(res.violations[0])


def test_enterprise_functions_are_unknown_on_kong_oss() -> None:
    with pytest.raises(KitFailure, match="could not find pdk method"):
        call("access", "kong.client.get_consumer_group")
    res = call("access", "kong.client.get_consumer_group", strict=False)
    assert res.calls[0].result is None  # Kong answers an unknown method with nil
    ok = call("access", "kong.client.get_consumer_group", enterprise=True)
    assert ok.calls[0].result is None and not ok.violations


def test_functions_newer_than_the_kong_version_are_unknown() -> None:
    with pytest.raises(KitFailure, match="could not find pdk method"):
        call("access", "kong.service.request.clear_query_arg", "a", kong_version=(3, 8))
    with pytest.raises(KitFailure, match="could not find pdk method"):
        call("access", "kong.service.request.clear_query_arg", "a", kong_version="3.8.1")
    res = call("access", "kong.service.request.clear_query_arg", "a", url="http://x/?a=1&b=2")
    assert res.service_request is not None and res.service_request.raw_query == "b=2"


def test_phase_rules_are_the_data_files_as_the_core_reads_them() -> None:
    # src/pdk_table.rs: external_phases, or no limit when phases is null. No overrides.
    for fn in FUNCTIONS:
        want = None if fn["phases"] is None else tuple(fn["external_phases"])
        assert rules()[fn["name"]].phases == want, fn["name"]


@pytest.mark.parametrize("method", ["kong.response.exit", "kong.response.error"])
def test_exit_and_error_work_in_the_response_phase(method: str) -> None:
    # Kong's code checks rewrite/access/response/header_filter for both (its docs omit response).
    res = call("response", method, 502, "replaced")
    assert res.events["response"].outcome in ("exit", "error") and not res.violations
    assert res.client_response is not None and res.client_response.status == 502


def test_the_registry_lists_every_module_with_fakes_and_refuses_a_name_twice() -> None:
    from pathlib import Path

    from kong_pdk.testing.fake import registry

    fake_dir = Path(registry.__file__).parent
    defining = sorted(p.stem for p in fake_dir.glob("*.py") if "FUNCTIONS = FunctionTable()" in p.read_text())
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in registry.MODULES) == defining
    assert sum(len(m.FUNCTIONS) for m in registry.MODULES) == len(IMPLS)
    with pytest.raises(RuntimeError, match="implemented twice"):
        registry.merged([registry.MODULES[0].FUNCTIONS, registry.MODULES[0].FUNCTIONS])
