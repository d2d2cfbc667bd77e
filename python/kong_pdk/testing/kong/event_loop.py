"""Kong's side of one event: HandleEvent, then the Step loop (docs/protocol.md §5.1).

1. ``plugin.HandleEvent {InstanceId, EventName}``; remember the reply's ``EventId``.
2. While the reply's ``Data`` is not the exact string ``"ret"``, it is a PDK request
   ``{Method, Args}``: resolve the answer, then send the Step method §5.3 picks with
   ``{EventId, Data}`` (no ``Data`` for nil) and loop on its reply.
3. A terminal call (``kong.response.exit`` / ``error``) ends the event on Kong's side:
   nothing more is sent for it (§5.2.3). So does a Lua error in a PDK call (§5.2.5).
4. A reply whose result is nil ends the event as a success (§11.6).

An RPC error interrupts the event and is raised with what happened so far attached.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from kong_pdk.testing.kong.answers import AnswerTable, Resolution, resolve
from kong_pdk.testing.kong.errors import KongProtocolError, LuaError, RpcError
from kong_pdk.testing.kong.event_result import EventResult, PdkCall, TerminalCall
from kong_pdk.testing.kong.lua import kong_call_args
from kong_pdk.testing.kong.luapack import pack
from kong_pdk.testing.kong.pdk_facts import pdk_facts
from kong_pdk.testing.kong.rpc import RpcClient
from kong_pdk.testing.kong.steps import PLAIN_STEP, StepChoice, choose_step
from kong_pdk.testing.kong.wire import decode_value

__all__ = ["run_event"]


def run_event(
    rpc: RpcClient,
    instance_id: int,
    phase: str,
    tables: Sequence[AnswerTable],
    kong_version: tuple[int, int],
    kong_log: Callable[[str], None],
) -> EventResult:
    event = EventResult(instance_id=instance_id, phase=phase)
    started = time.perf_counter()

    def log(line: str) -> None:
        event.log.append(line)
        kong_log(line)

    try:
        res = _timed_call(rpc, event, "plugin.HandleEvent", {"InstanceId": instance_id, "EventName": phase})
        event.event_id = _index(res, "EventId") if res is not None else None
        while True:
            if res is None:
                event.nil_reply = True  # [1, id, nil, nil] ends the event as a success (§11.6)
                break
            data = _index(res, "Data")
            if data == "ret" or data == b"ret":  # a bin "ret" is the same Lua string
                break
            method, raw_args = _pdk_request(data)
            args = kong_call_args(raw_args)
            if method in pdk_facts().terminal:
                _record_terminal(event, method, raw_args, args)
                break
            call = _answer(method, raw_args, args, tables, kong_version, event, log)
            if call is None:
                break  # Lua error: Kong abandons the event (§5.2.5)
            choice, resolution = call
            payload: dict[str, object] = {"EventId": event.event_id}
            if choice.has_data:
                payload["Data"] = choice.data
            record = PdkCall(
                method=method,
                args=args,
                raw_args=raw_args,
                found=resolution.found,
                source=resolution.source,
                returns=resolution.returns,
                step_method=choice.method,
                has_data=choice.has_data,
                data=decode_value(pack(choice.data)) if choice.has_data else None,
            )
            event.calls.append(record)  # recorded first, so an error still shows it
            res = _timed_call(rpc, event, choice.method, payload)
            event.calls[-1] = dataclasses.replace(record, rpc_seconds=event.rpc_seconds[-1])
            step_event_id = _index(res, "EventId") if res is not None else event.event_id
            if step_event_id != event.event_id:
                # Kong keeps using the id from HandleEvent; worth a line for the test.
                log(f"step reply carries EventId {step_event_id!r}, expected {event.event_id!r}")
    except (RpcError, KongProtocolError) as exc:
        exc.partial = event
        raise
    finally:
        event.elapsed = time.perf_counter() - started
    return event


def _timed_call(rpc: RpcClient, event: EventResult, method: str, payload: dict[str, object]) -> object:
    started = time.perf_counter()
    try:
        return rpc.call(method, [payload])
    finally:
        event.rpc_seconds.append(time.perf_counter() - started)


def _index(table: object, key: str) -> object:
    """``t[key]`` as Lua evaluates it: only a table (or a string, via its metatable) indexes."""
    if isinstance(table, Mapping):
        return table.get(key)
    if isinstance(table, (list, str, bytes)):
        return None  # a table without that key, or a string (its metatable gives nil)
    kind = "nil" if table is None else type(table).__name__
    raise KongProtocolError(f"attempt to index a {kind} value (field {key!r})")


def _pdk_request(data: object) -> tuple[str, object]:
    if not isinstance(data, Mapping):
        raise KongProtocolError(f"Data is neither \"ret\" nor a {{Method, Args}} table: {data!r}")
    method = data.get("Method")
    if isinstance(method, bytes):
        method = method.decode("utf-8", "surrogateescape")
    if not isinstance(method, str):
        raise KongProtocolError(f"PDK request without a string Method: {data!r}")
    return method, data.get("Args")


def _record_terminal(event: EventResult, method: str, raw_args: object, args: tuple[object, ...]) -> None:
    status, body, headers = (args + (None, None, None))[:3]
    event.terminal = TerminalCall(method, status, body, headers)
    event.outcome = "exit" if method.endswith(".exit") else "error"
    event.calls.append(
        PdkCall(method=method, args=args, raw_args=raw_args, found=True, source="terminal", returns=())
    )


def _answer(
    method: str,
    raw_args: object,
    args: tuple[object, ...],
    tables: Sequence[AnswerTable],
    kong_version: tuple[int, int],
    event: EventResult,
    log: Callable[[str], None],
) -> tuple[StepChoice, Resolution] | None:
    try:
        resolution = resolve(method, args, tables)
        if not resolution.found:
            # Not an error for Kong: a log line and a plain Step without Data (§5.1).
            log(f"could not find pdk method: {method}")
            return StepChoice(PLAIN_STEP, False), resolution
        return choose_step(method, resolution.returns, kong_version), resolution
    except LuaError as exc:
        event.outcome = "lua_error"
        event.lua_error = str(exc)
        event.calls.append(
            PdkCall(method=method, args=args, raw_args=raw_args, found=True, source="lua_error", returns=())
        )
        log(f"lua error in {method}: {exc}")
        return None
