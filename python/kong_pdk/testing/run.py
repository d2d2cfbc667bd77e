"""``kong-pdk run PLUGIN.py [URL]``: one simulated request, printed like ``curl -i``.

    kong-pdk run examples/py-hello.py -H 'host: example.com' http://example.com/
    kong-pdk run my_plugin.py --config '{"limit": 3}' -X POST --data '{"a":1}' -v

The plugin runs through the test kit (our server in-process, Kong emulated
over the socket), with Kong's lenient behaviour so the output shows what Kong
would do. ``-v`` also prints every PDK call, Kong's log lines and the plugin's
log entries, on stderr. A handler that raised has its traceback printed on
stderr (after the response Kong would send, a 500 in rewrite/access) and the
exit status is 1; a plugin file that cannot be imported is one line on stderr
and status 1, as with ``kong-pdk check``; otherwise the status is 0.

The ``kong-pdk`` command (``kong_pdk.command``) parses the arguments
(``add_arguments``) and calls ``run`` once it knows the testing extra is there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "add_arguments", "run"]


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The arguments of ``kong-pdk run``."""
    run.add_argument("plugin", help="the plugin file (defines Plugin, Schema, version, priority)")
    # Not %(default)s: parse_intermixed_args formats a positional's help without it.
    run.add_argument("url", nargs="?", default="http://localhost/", help="request URL (default: http://localhost/)")
    run.add_argument("--config", default="{}", help="plugin config as JSON (checked against the Schema)")
    run.add_argument("-X", "--request", dest="method", default=None, help="HTTP method (default GET, POST with --data)")
    run.add_argument("-H", "--header", dest="headers", action="append", default=[], help="'name: value' request header")
    run.add_argument("-d", "--data", default=None, help="request body; @FILE reads a file")
    run.add_argument("--name", default=None, help="plugin name (default: the file name without .py)")
    run.add_argument("--client-ip", default="127.0.0.1", help="address of the client (default: %(default)s)")
    run.add_argument("--strict", action="store_true", help="fail on PDK calls Kong would refuse")
    run.add_argument("-v", "--verbose", action="store_true", help="print PDK calls and logs on stderr")
    run.add_argument(
        "--model",
        choices=("auto", "threads", "greenlets", "gevent", "processes"),
        default="auto",
        help="execution model, as the server's --model, -g or -m (default: %(default)s; async def phases run on asyncio)",
    )
    run.add_argument("--workers", type=int, default=1, help="worker processes for --model processes")


def _headers(values: Sequence[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"kong-pdk run: bad header {item!r}; use 'name: value'")
        out.append((name.strip(), value.strip()))
    return out


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        with open(data[1:], "rb") as f:
            return f.read()
    return data.encode()


def main(argv: Sequence[str] | None = None) -> int:
    """``kong-pdk`` (kept for ``python -m kong_pdk.testing.run run ...``)."""
    from kong_pdk.command import main as command_main

    return command_main(argv)


def run(args: argparse.Namespace) -> int:
    """Runs the request ``args`` describe; returns the exit status."""
    import warnings

    from kong_pdk.plugin_check import PluginWarning
    from kong_pdk.testing.kit.loader import load_plugin
    from kong_pdk.testing.kit.request_result import KitFailure
    from kong_pdk.testing.kit.runner import PluginRunner
    from kong_pdk.testing.kit.schema import ConfigError

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        print(f"kong-pdk run: --config is not JSON: {exc}", file=sys.stderr)
        return 2
    body = _body(args.data)
    method = args.method or ("POST" if body is not None else "GET")
    try:
        spec = load_plugin(args.plugin, args.name)
    except OSError as exc:
        print(f"kong-pdk run: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the plugin's own import failed: say what, not a traceback of ours
        print(f"kong-pdk run: importing {args.plugin} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        with warnings.catch_warnings(record=True) as caught:  # said once, on one line each
            warnings.simplefilter("always", PluginWarning)
            runner = PluginRunner(spec, config, strict=args.strict, model=args.model, workers=args.workers)
        for warning in caught:
            if issubclass(warning.category, PluginWarning):
                print(f"kong-pdk run: warning: {warning.message}", file=sys.stderr)
        url = args.url if "://" in args.url else "http://" + args.url
        if url.startswith("https://"):
            res = runner.https(method, url, _headers(args.headers), body, client_ip=args.client_ip)
        else:
            res = runner.http(method, url, _headers(args.headers), body, client_ip=args.client_ip)
    except ConfigError as exc:
        print(f"kong-pdk run: Kong would refuse this config: {exc}", file=sys.stderr)
        return 2
    except KitFailure as exc:
        _verbose(exc.result)
        print(f"kong-pdk run: {exc}", file=sys.stderr)
        return 1
    except (OSError, TypeError, ValueError, ImportError) as exc:
        print(f"kong-pdk run: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        _verbose(res)
    response = res.client_response
    assert response is not None
    out = sys.stdout.buffer
    out.write(f"HTTP/1.1 {response.status} {_reason(response.status)}\r\n".encode())
    for name, value in response.headers:
        out.write(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    out.write(b"\r\n")
    out.write(response.body)
    if response.body and not response.body.endswith(b"\n"):
        out.write(b"\n")
    out.flush()
    if res.plugin_errors and not args.verbose:  # -v printed them already
        for error in res.plugin_errors:
            print(f"kong-pdk run: {error}", file=sys.stderr, end="" if str(error).endswith("\n") else "\n")
    return 1 if res.plugin_errors else 0


def _verbose(res: object) -> None:
    from kong_pdk.testing.kit.request_result import Result

    if not isinstance(res, Result):
        return
    err = sys.stderr
    for call in res.calls:
        print(f"* {call}", file=err)
    for entry in res.logs:
        print(f"* log [{entry.phase}] {entry}", file=err)
    for line in res.kong_log:
        print(f"* kong: {line}", file=err)
    for v in res.violations:
        print(f"* refused by Kong: {v}", file=err)
    for e in res.plugin_errors:
        print(f"* {e}", file=err)
    if res.service_request is not None:
        sr = res.service_request
        print(f"> upstream: {sr.method} {sr.url}", file=err)
        for name, value in sr.headers:
            print(f"> {name}: {value}", file=err)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
