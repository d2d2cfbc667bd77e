"""Fake ``kong.client.*``, ``kong.client.tls.*``, ``kong.router.*`` and ``kong.plugin.get_id``.

* ``get_ip`` is the address connected to Kong; ``get_forwarded_ip`` the one
  in Kong's ``real_ip_header`` (X-Real-IP by default) when the connecting
  address is trusted (nginx realip; for X-Forwarded-For, the last address);
* consumer and credential are per request: set by ``authenticate`` or given by
  the test as already authenticated; ``load_consumer`` searches the world's
  consumers by id (or username when asked);
* route and service are the world's entities (nil when no route matched).
"""

from __future__ import annotations

from kong_pdk.testing.fake.exchange import Exchange
from kong_pdk.testing.fake.function_table import FunctionTable
from kong_pdk.testing.fake.iptrust import is_trusted
from kong_pdk.testing.fake.lua_args import need_str, opt_arg
from kong_pdk.testing.kong.errors import LuaError
from kong_pdk.testing.kong.lua import LuaMulti

FUNCTIONS = FunctionTable()


@FUNCTIONS.define("kong.client.get_ip")
def get_ip(ex: Exchange) -> str:
    return ex.request.client_ip


@FUNCTIONS.define("kong.client.get_port")
def get_port(ex: Exchange) -> int:
    return ex.request.client_port


def forwarded_ip(ex: Exchange) -> str:
    if is_trusted(ex.request.client_ip, ex.world.trusted_ips):
        value = ex.headers.get(ex.world.real_ip_header)
        if value:
            last = value.split(",")[-1].strip()
            return last.rsplit(":", 1)[0] if last.count(":") == 1 else last
    return ex.request.client_ip


@FUNCTIONS.define("kong.client.get_forwarded_ip")
def get_forwarded_ip(ex: Exchange) -> str:
    return forwarded_ip(ex)


@FUNCTIONS.define("kong.client.get_forwarded_port")
def get_forwarded_port(ex: Exchange) -> int:
    return ex.request.client_port


@FUNCTIONS.define("kong.client.get_protocol")
def get_protocol(ex: Exchange, *args: object) -> object:
    allow_terminated = opt_arg(args, 0)
    if allow_terminated is not None and not isinstance(allow_terminated, bool):
        raise LuaError("allow_terminated must be a boolean")
    route = ex.world.route
    if route is None:
        return LuaMulti(None, "No active route found")
    if ex.subsystem == "stream":
        return "tls" if ex.is_https else "tcp"
    scheme = ex.request.scheme
    if allow_terminated and scheme == "http" and is_trusted(ex.request.client_ip, ex.world.trusted_ips):
        if (ex.headers.get("x-forwarded-proto") or "").lower() == "https":
            return "https"
    return scheme


@FUNCTIONS.define("kong.client.get_consumer")
def get_consumer(ex: Exchange) -> object:
    return ex.consumer


@FUNCTIONS.define("kong.client.get_credential")
def get_credential(ex: Exchange) -> object:
    return ex.credential


@FUNCTIONS.define("kong.client.authenticate")
def authenticate(ex: Exchange, *args: object) -> None:
    consumer = opt_arg(args, 0)
    credential = opt_arg(args, 1)
    if consumer is None and credential is None:
        raise LuaError("either credential or consumer must be provided")
    for value, what in ((consumer, "consumer"), (credential, "credential")):
        if value is not None and not isinstance(value, (dict, list)):
            raise LuaError(f"{what} must be a table or nil")
    ex.consumer = consumer
    ex.credential = credential


@FUNCTIONS.define("kong.client.load_consumer")
def load_consumer(ex: Exchange, *args: object) -> object:
    consumer_id = need_str(opt_arg(args, 0), "consumer_id")
    by_username = opt_arg(args, 1)
    for row in ex.world.consumers:
        if row.get("id") == consumer_id:
            return dict(row)
    if by_username:
        for row in ex.world.consumers:
            if row.get("username") == consumer_id:
                return dict(row)
    return None


@FUNCTIONS.define("kong.client.get_consumer_group")
def get_consumer_group(ex: Exchange) -> object:
    groups = ex.consumer_groups
    return groups[0] if isinstance(groups, list) and groups else None


@FUNCTIONS.define("kong.client.get_consumer_groups")
def get_consumer_groups(ex: Exchange) -> object:
    return ex.consumer_groups


@FUNCTIONS.define("kong.client.set_authenticated_consumer_group")
def set_authenticated_consumer_group(ex: Exchange, *args: object) -> None:
    group = opt_arg(args, 0)
    ex.consumer_groups = [group] if group is not None else None


@FUNCTIONS.define("kong.client.set_authenticated_consumer_groups")
def set_authenticated_consumer_groups(ex: Exchange, *args: object) -> None:
    ex.consumer_groups = opt_arg(args, 0)


@FUNCTIONS.define("kong.client.authenticate_consumer_group_by_consumer_id")
def authenticate_consumer_group_by_consumer_id(ex: Exchange, *args: object) -> None:
    need_str(opt_arg(args, 0), "consumer_id")


# -- kong.client.tls ---------------------------------------------------------------


@FUNCTIONS.define("kong.client.tls.request_client_certificate")
def request_client_certificate(ex: Exchange, *args: object) -> object:
    ex.tls.client_certificate_requested = True
    ex.tls.ca_certs = opt_arg(args, 0)
    return True


@FUNCTIONS.define("kong.client.tls.disable_session_reuse")
def disable_session_reuse(ex: Exchange) -> object:
    ex.tls.session_reuse_disabled = True
    return True


@FUNCTIONS.define("kong.client.tls.get_full_client_certificate_chain")
def get_full_client_certificate_chain(ex: Exchange) -> object:
    return ex.request.client_certificate


@FUNCTIONS.define("kong.client.tls.set_client_verify")
def set_client_verify(ex: Exchange, *args: object) -> None:
    value = need_str(opt_arg(args, 0), "v")
    if value != "SUCCESS" and value != "NONE" and not value.startswith("FAILED:"):
        raise LuaError("unknown client verify value: " + value + " accepted values are: SUCCESS, NONE or FAILED:<reason>")
    ex.tls.client_verify = value


@FUNCTIONS.define("kong.client.tls.disable_http2_alpn")
def disable_http2_alpn(ex: Exchange) -> object:
    return True


# -- kong.router, kong.plugin --------------------------------------------------------


@FUNCTIONS.define("kong.router.get_route")
def get_route(ex: Exchange) -> object:
    return dict(ex.world.route) if ex.world.route is not None else None


@FUNCTIONS.define("kong.router.get_service")
def get_service(ex: Exchange) -> object:
    return dict(ex.world.service) if ex.world.service is not None else None


@FUNCTIONS.define("kong.plugin.get_id")
def get_id(ex: Exchange) -> str:
    return ex.plugin_id
