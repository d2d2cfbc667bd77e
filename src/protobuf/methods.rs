//! The PDK functions Kong serves on ProtoBuf:1: each one's name as a plugin
//! calls it, the service method that carries it, and the message types of
//! its argument and result (the `service Kong` of `pluginsocket.proto`; a
//! unit test checks this table against it).
//!
//! A function not listed here does not exist on this wire: Kong would fail
//! the request, so the call raises where the plugin makes it (`event.rs`).

use std::collections::HashMap;
use std::sync::OnceLock;

/// How a call's arguments become its input message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    Empty,
    String,
    Int,
    /// An `Int` that is a table's maximum entry count: Kong refuses 0, so
    /// a call without one sends go-pdk's 100.
    MaxCount,
    Bool,
    ByteString,
    Kv,
    ListValue,
    Struct,
    ExitArgs,
    Target,
    ConsumerSpec,
    AuthenticateArgs,
}

/// How a result message becomes the value the plugin sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Empty,
    String,
    Int,
    Number,
    Bool,
    ByteString,
    Value,
    Struct,
    RawBody,
    UriCaptures,
    Route,
    Service,
    Consumer,
    Credential,
    MemoryStats,
}

// The message names and `rpc` are read by the test that checks the table
// against the .proto's service.
#[cfg_attr(not(test), allow(dead_code))]
impl Arg {
    /// The message's full name in the .proto.
    pub fn message(self) -> &'static str {
        match self {
            Arg::Empty => ".google.protobuf.Empty",
            Arg::String => ".kong_plugin_protocol.String",
            Arg::Int | Arg::MaxCount => ".kong_plugin_protocol.Int",
            Arg::Bool => ".kong_plugin_protocol.Bool",
            Arg::ByteString => ".kong_plugin_protocol.ByteString",
            Arg::Kv => ".kong_plugin_protocol.KV",
            Arg::ListValue => ".google.protobuf.ListValue",
            Arg::Struct => ".google.protobuf.Struct",
            Arg::ExitArgs => ".kong_plugin_protocol.ExitArgs",
            Arg::Target => ".kong_plugin_protocol.Target",
            Arg::ConsumerSpec => ".kong_plugin_protocol.ConsumerSpec",
            Arg::AuthenticateArgs => ".kong_plugin_protocol.AuthenticateArgs",
        }
    }
}

impl Ret {
    /// The message's full name in the .proto.
    pub fn message(self) -> &'static str {
        match self {
            Ret::Empty => ".google.protobuf.Empty",
            Ret::String => ".kong_plugin_protocol.String",
            Ret::Int => ".kong_plugin_protocol.Int",
            Ret::Number => ".kong_plugin_protocol.Number",
            Ret::Bool => ".kong_plugin_protocol.Bool",
            Ret::ByteString => ".kong_plugin_protocol.ByteString",
            Ret::Value => ".google.protobuf.Value",
            Ret::Struct => ".google.protobuf.Struct",
            Ret::RawBody => ".kong_plugin_protocol.RawBodyResult",
            Ret::UriCaptures => ".kong_plugin_protocol.UriCapturesResult",
            Ret::Route => ".kong_plugin_protocol.Route",
            Ret::Service => ".kong_plugin_protocol.Service",
            Ret::Consumer => ".kong_plugin_protocol.Consumer",
            Ret::Credential => ".kong_plugin_protocol.AuthenticatedCredential",
            Ret::MemoryStats => ".kong_plugin_protocol.MemoryStats",
        }
    }
}

/// One PDK function on ProtoBuf:1.
#[derive(Debug)]
pub struct PbMethod {
    /// As the plugin calls it, and as the method-name frame carries it.
    pub name: &'static str,
    /// The service method in the .proto.
    #[cfg_attr(not(test), allow(dead_code))]
    pub rpc: &'static str,
    pub arg: Arg,
    pub ret: Ret,
}

const fn m(name: &'static str, rpc: &'static str, arg: Arg, ret: Ret) -> PbMethod {
    PbMethod {
        name,
        rpc,
        arg,
        ret,
    }
}

/// Every PDK function of ProtoBuf:1 (74, the same in Kong 3.4 to master;
/// `kong.service.set_upstream` returns Empty before 3.7, read as false).
pub const METHODS: [PbMethod; 74] = [
    m(
        "kong.client.get_ip",
        "Client_GetIp",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.client.get_forwarded_ip",
        "Client_GetForwardedIp",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.client.get_port",
        "Client_GetPort",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.client.get_forwarded_port",
        "Client_GetForwardedPort",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.client.get_credential",
        "Client_GetCredential",
        Arg::Empty,
        Ret::Credential,
    ),
    m(
        "kong.client.load_consumer",
        "Client_LoadConsumer",
        Arg::ConsumerSpec,
        Ret::Consumer,
    ),
    m(
        "kong.client.get_consumer",
        "Client_GetConsumer",
        Arg::Empty,
        Ret::Consumer,
    ),
    m(
        "kong.client.authenticate",
        "Client_Authenticate",
        Arg::AuthenticateArgs,
        Ret::Empty,
    ),
    m(
        "kong.client.get_protocol",
        "Client_GetProtocol",
        Arg::Bool,
        Ret::String,
    ),
    m("kong.ctx.shared.set", "Ctx_SetShared", Arg::Kv, Ret::Empty),
    m(
        "kong.ctx.shared.get",
        "Ctx_GetShared",
        Arg::String,
        Ret::Value,
    ),
    m("kong.ip.is_trusted", "Ip_IsTrusted", Arg::String, Ret::Bool),
    m("kong.log.alert", "Log_Alert", Arg::ListValue, Ret::Empty),
    m("kong.log.crit", "Log_Crit", Arg::ListValue, Ret::Empty),
    m("kong.log.err", "Log_Err", Arg::ListValue, Ret::Empty),
    m("kong.log.warn", "Log_Warn", Arg::ListValue, Ret::Empty),
    m("kong.log.notice", "Log_Notice", Arg::ListValue, Ret::Empty),
    m("kong.log.info", "Log_Info", Arg::ListValue, Ret::Empty),
    m("kong.log.debug", "Log_Debug", Arg::ListValue, Ret::Empty),
    m(
        "kong.log.set_serialize_value",
        "Log_SetSerializeValue",
        Arg::Kv,
        Ret::Empty,
    ),
    m(
        "kong.log.serialize",
        "Log_Serialize",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.nginx.get_var",
        "Nginx_GetVar",
        Arg::String,
        Ret::String,
    ),
    m(
        "kong.nginx.get_tls1_version_str",
        "Nginx_GetTls1VersionStr",
        Arg::Empty,
        Ret::String,
    ),
    m("kong.nginx.set_ctx", "Nginx_SetCtx", Arg::Kv, Ret::String),
    m(
        "kong.nginx.get_ctx",
        "Nginx_GetCtx",
        Arg::String,
        Ret::Value,
    ),
    m(
        "kong.nginx.req_start_time",
        "Nginx_ReqStartTime",
        Arg::Empty,
        Ret::Number,
    ),
    m(
        "kong.nginx.get_subsystem",
        "Nginx_GetSubsystem",
        Arg::Empty,
        Ret::String,
    ),
    m("kong.node.get_id", "Node_GetId", Arg::Empty, Ret::String),
    m(
        "kong.node.get_memory_stats",
        "Node_GetMemoryStats",
        Arg::Empty,
        Ret::MemoryStats,
    ),
    m(
        "kong.request.get_scheme",
        "Request_GetScheme",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_host",
        "Request_GetHost",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_port",
        "Request_GetPort",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.request.get_forwarded_scheme",
        "Request_GetForwardedScheme",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_forwarded_host",
        "Request_GetForwardedHost",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_forwarded_port",
        "Request_GetForwardedPort",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.request.get_http_version",
        "Request_GetHttpVersion",
        Arg::Empty,
        Ret::Number,
    ),
    m(
        "kong.request.get_method",
        "Request_GetMethod",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_path",
        "Request_GetPath",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_path_with_query",
        "Request_GetPathWithQuery",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_raw_query",
        "Request_GetRawQuery",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.request.get_query_arg",
        "Request_GetQueryArg",
        Arg::String,
        Ret::String,
    ),
    m(
        "kong.request.get_query",
        "Request_GetQuery",
        Arg::MaxCount,
        Ret::Struct,
    ),
    m(
        "kong.request.get_header",
        "Request_GetHeader",
        Arg::String,
        Ret::String,
    ),
    m(
        "kong.request.get_headers",
        "Request_GetHeaders",
        Arg::MaxCount,
        Ret::Struct,
    ),
    m(
        "kong.request.get_raw_body",
        "Request_GetRawBody",
        Arg::Empty,
        Ret::RawBody,
    ),
    m(
        "kong.request.get_uri_captures",
        "Request_GetUriCaptures",
        Arg::Empty,
        Ret::UriCaptures,
    ),
    m(
        "kong.response.get_status",
        "Response_GetStatus",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.response.get_header",
        "Response_GetHeader",
        Arg::String,
        Ret::String,
    ),
    m(
        "kong.response.get_headers",
        "Response_GetHeaders",
        Arg::MaxCount,
        Ret::Struct,
    ),
    m(
        "kong.response.get_source",
        "Response_GetSource",
        Arg::Empty,
        Ret::String,
    ),
    m(
        "kong.response.set_status",
        "Response_SetStatus",
        Arg::Int,
        Ret::Empty,
    ),
    m(
        "kong.response.set_header",
        "Response_SetHeader",
        Arg::Kv,
        Ret::Empty,
    ),
    m(
        "kong.response.add_header",
        "Response_AddHeader",
        Arg::Kv,
        Ret::Empty,
    ),
    m(
        "kong.response.clear_header",
        "Response_ClearHeader",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.response.set_headers",
        "Response_SetHeaders",
        Arg::Struct,
        Ret::Empty,
    ),
    m(
        "kong.response.exit",
        "Response_Exit",
        Arg::ExitArgs,
        Ret::Empty,
    ),
    m(
        "kong.router.get_route",
        "Router_GetRoute",
        Arg::Empty,
        Ret::Route,
    ),
    m(
        "kong.router.get_service",
        "Router_GetService",
        Arg::Empty,
        Ret::Service,
    ),
    m(
        "kong.service.set_upstream",
        "Service_SetUpstream",
        Arg::String,
        Ret::Bool,
    ),
    m(
        "kong.service.set_target",
        "Service_SetTarget",
        Arg::Target,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_scheme",
        "Service_Request_SetScheme",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_path",
        "Service_Request_SetPath",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_raw_query",
        "Service_Request_SetRawQuery",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_method",
        "Service_Request_SetMethod",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_query",
        "Service_Request_SetQuery",
        Arg::Struct,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_header",
        "Service_Request_SetHeader",
        Arg::Kv,
        Ret::Empty,
    ),
    m(
        "kong.service.request.add_header",
        "Service_Request_AddHeader",
        Arg::Kv,
        Ret::Empty,
    ),
    m(
        "kong.service.request.clear_header",
        "Service_Request_ClearHeader",
        Arg::String,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_headers",
        "Service_Request_SetHeaders",
        Arg::Struct,
        Ret::Empty,
    ),
    m(
        "kong.service.request.set_raw_body",
        "Service_Request_SetRawBody",
        Arg::ByteString,
        Ret::Empty,
    ),
    m(
        "kong.service.response.get_status",
        "Service_Response_GetStatus",
        Arg::Empty,
        Ret::Int,
    ),
    m(
        "kong.service.response.get_header",
        "Service_Response_GetHeader",
        Arg::String,
        Ret::String,
    ),
    m(
        "kong.service.response.get_headers",
        "Service_Response_GetHeaders",
        Arg::MaxCount,
        Ret::Struct,
    ),
    m(
        "kong.service.response.get_raw_body",
        "Service_Response_GetRawBody",
        Arg::Empty,
        Ret::ByteString,
    ),
];

/// The ProtoBuf:1 function called `name`, if the wire has it.
pub fn find(name: &str) -> Option<&'static PbMethod> {
    static BY_NAME: OnceLock<HashMap<&'static str, &'static PbMethod>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| METHODS.iter().map(|m| (m.name, m)).collect())
        .get(name)
        .copied()
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;
    use crate::pdk_table::PdkTable;

    /// Kong's naming rule for a method without a MethodName option:
    /// `Service_Request_SetHeader` -> `kong.service.request.set_header`.
    fn kong_name(rpc: &str) -> String {
        let dotted = format!("Kong.{rpc}").replace('_', ".");
        let mut out = String::new();
        let mut after_lower = false;
        for c in dotted.chars() {
            // `([a-z]%d*)([A-Z])`: a capital after a lowercase letter and digits.
            if c.is_ascii_uppercase() && after_lower {
                out.push('_');
            }
            after_lower = match c {
                'a'..='z' => true,
                '0'..='9' => after_lower,
                _ => false,
            };
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn the_table_is_the_service_of_the_proto() {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/pluginsocket.bin"));
        let set = FileDescriptorSet::decode(&bytes[..]).expect("descriptor set");
        let file = set
            .file
            .iter()
            .find(|f| f.package() == "kong_plugin_protocol")
            .expect("our file");
        let service = file
            .service
            .iter()
            .find(|s| s.name() == "Kong")
            .expect("service");
        assert_eq!(service.method.len(), METHODS.len());
        for method in &service.method {
            let row = METHODS
                .iter()
                .find(|m| m.rpc == method.name())
                .unwrap_or_else(|| panic!("{} missing from the table", method.name()));
            assert_eq!(row.arg.message(), method.input_type(), "{}", row.rpc);
            assert_eq!(row.ret.message(), method.output_type(), "{}", row.rpc);
            if method.options.is_none() {
                assert_eq!(row.name, kong_name(method.name()));
            }
        }
        assert_eq!(
            kong_name("Nginx_GetTls1VersionStr"),
            "kong.nginx.get_tls1_version_str"
        );
    }

    #[test]
    fn every_function_is_in_the_pdk_and_marked_there() {
        let table = PdkTable::get();
        for m in &METHODS {
            assert!(
                table.function(m.name).is_some(),
                "{} not in pdk-api.json",
                m.name
            );
            assert_eq!(find(m.name).map(|f| f.rpc), Some(m.rpc));
        }
        // pdk-api.json marks the same functions (the Python side reads it:
        // the stubs, `kong-pdk check`).
        let data: serde_json::Value =
            serde_json::from_str(include_str!("../../python/kong_pdk/pdk/pdk-api.json"))
                .expect("pdk-api.json");
        let marked: Vec<(String, String)> = data["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .filter_map(|f| {
                Some((
                    f["name"].as_str()?.to_string(),
                    f["protobuf"].as_str()?.to_string(),
                ))
            })
            .collect();
        assert_eq!(marked.len(), METHODS.len());
        for (name, rpc) in &marked {
            assert_eq!(find(name).map(|m| m.rpc), Some(rpc.as_str()), "{name}");
        }
        assert!(find("kong.response.error").is_none());
        assert!(find("kong.request.get_body").is_none());
    }
}
