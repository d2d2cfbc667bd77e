//! The commands of an `RpcCall` other than HandleEvent, answered through
//! the `Service` as on MessagePack:1 and converted to their `RpcReturn`.
//!
//! ProtoBuf:1 has no error reply: a command that fails is logged and
//! answered with an `RpcReturn` that carries only the sequence (Kong then
//! fails that request, and serves the next ones). A server that a newer one
//! replaced closes the connection instead: Kong then starts the instance
//! again on a new connection, which reaches the newer server.

use rmpv::Value;

use super::messages::rpc_call::Call;
use super::messages::rpc_return::Return;
use super::messages::{InstanceStatus, PluginInfo, PluginNames};
use super::shared::Shared;
use super::values::to_pb_value;
use crate::rpc::{as_map, as_u64, field};
use crate::rpc_error::RpcError;
use crate::service::{Encoded, Reply};

/// How a command was answered.
pub enum Answered {
    Return(Option<Return>),
    /// Logged; the `RpcReturn` carries only the sequence.
    Failed,
    /// A newer server has the socket path: close, so that Kong goes there.
    HandedOver,
}

pub fn answer(shared: &Shared, call: Call) -> Answered {
    match answer_inner(shared, call) {
        Ok(ret) => Answered::Return(ret),
        Err(Failure::HandedOver) => Answered::HandedOver,
        Err(Failure::Failed) => Answered::Failed,
    }
}

enum Failure {
    Failed,
    HandedOver,
}

/// The instance registry's id of a short id.
fn long_id(shared: &Shared, short: i32) -> Result<u64, Failure> {
    shared.ids.long(short).ok_or_else(|| {
        log::info!("no plugin instance #{short}");
        Failure::Failed
    })
}

fn answer_inner(shared: &Shared, call: Call) -> Result<Option<Return>, Failure> {
    let service = &shared.service;
    Ok(Some(match call {
        Call::CmdGetPluginNames(_) => Return::PluginNames(PluginNames {
            names: service.plugins.iter().map(|p| p.name.clone()).collect(),
        }),
        Call::CmdGetPluginInfo(c) => {
            let name = Some(c.name.as_str()).filter(|n| !n.is_empty());
            let info = value(service.plugin_info(name), "GetPluginInfo")?;
            Return::PluginInfo(plugin_info(&info, service_load_time(shared)))
        }
        Call::CmdStartInstance(c) => {
            // Kong's Config is JSON text, as on MessagePack:1.
            let config = Value::from(String::from_utf8_lossy(&c.config).into_owned());
            let started = value(
                service.start_instance_now(&c.name, &config),
                "StartInstance",
            )?;
            let long = as_map(&started)
                .and_then(|m| field(m, "Id"))
                .and_then(as_u64)
                .ok_or(Failure::Failed)?;
            let short = shared.ids.assign(long);
            Return::InstanceStatus(instance_status(&started, short))
        }
        Call::CmdGetInstanceStatus(c) => {
            let long = long_id(shared, c.instance_id)?;
            let status = value(service.instance_status(long), "GetInstanceStatus")?;
            Return::InstanceStatus(instance_status(&status, c.instance_id))
        }
        Call::CmdCloseInstance(c) => {
            let long = long_id(shared, c.instance_id)?;
            shared.ids.forget(c.instance_id);
            let closed = value(service.close_instance(long), "CloseInstance")?;
            Return::InstanceStatus(instance_status(&closed, c.instance_id))
        }
        // Handled by the connection (`handler.rs`).
        Call::CmdHandleEvent(_) => return Ok(None),
    }))
}

fn service_load_time(shared: &Shared) -> i64 {
    shared
        .service
        .plugins
        .first()
        .map_or(0, |p| p.load_time as i64)
}

/// The result of a service call; a failure is logged.
fn value(reply: Reply, what: &str) -> Result<Value, Failure> {
    match reply {
        Ok(Encoded::Value(v)) => Ok(v),
        // Only events end with "ret" or a PDK call; none is served here.
        Ok(Encoded::Ret(_) | Encoded::Call { .. }) => Err(Failure::Failed),
        Err(RpcError::HandedOver) => Err(Failure::HandedOver),
        Err(e) => {
            log::log!(e.log_level(), "{what}: {e}");
            Err(Failure::Failed)
        }
    }
}

fn text(m: &[(Value, Value)], key: &str) -> String {
    field(m, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn instance_status(v: &Value, short: i32) -> InstanceStatus {
    let m = as_map(v).unwrap_or(&[]);
    InstanceStatus {
        name: text(m, "Name"),
        instance_id: short,
        config: field(m, "Config").and_then(|c| to_pb_value(c).ok()),
        started_at: field(m, "StartTime")
            .and_then(Value::as_f64)
            .map_or(0, |t| t as i64),
    }
}

/// `{Name, Phases, Priority, Version, Schema}` as `PluginInfo`; the
/// schema as JSON text.
fn plugin_info(v: &Value, loaded_at: i64) -> PluginInfo {
    let m = as_map(v).unwrap_or(&[]);
    let phases = field(m, "Phases")
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    PluginInfo {
        name: text(m, "Name"),
        updated_at: loaded_at,
        loaded_at,
        phases,
        version: text(m, "Version"),
        priority: field(m, "Priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0),
        schema: field(m, "Schema").map(json_text).unwrap_or_default(),
    }
}

/// A MessagePack value as JSON text (the schema is JSON data to begin with).
fn json_text(v: &Value) -> String {
    fn to_json(v: &Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            Value::Nil => J::Null,
            Value::Boolean(b) => J::Bool(*b),
            Value::Integer(i) => i
                .as_i64()
                .map(J::from)
                .or_else(|| i.as_u64().map(J::from))
                .unwrap_or(J::Null),
            Value::F32(f) => J::from(f64::from(*f)),
            Value::F64(f) => J::from(*f),
            Value::String(s) => J::from(s.as_str().unwrap_or_default()),
            Value::Binary(b) => J::from(String::from_utf8_lossy(b).into_owned()),
            Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().map_or_else(|| k.to_string(), str::to_string),
                            to_json(v),
                        )
                    })
                    .collect(),
            ),
            Value::Ext(..) => J::Null,
        }
    }
    to_json(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::map;

    #[test]
    fn plugin_info_carries_the_schema_as_json() {
        let info = map(vec![
            ("Name", Value::from("hello")),
            ("Phases", Value::Array(vec![Value::from("access")])),
            ("Priority", Value::from(5)),
            ("Version", Value::from("1.0")),
            ("Schema", map(vec![("name", Value::from("hello"))])),
        ]);
        let got = plugin_info(&info, 7);
        assert_eq!(got.name, "hello");
        assert_eq!(got.phases, ["access"]);
        assert_eq!((got.priority, got.loaded_at), (5, 7));
        assert_eq!(got.schema, r#"{"name":"hello"}"#);
    }

    #[test]
    fn instance_status_uses_the_short_id() {
        let started = map(vec![
            ("Name", Value::from("hello")),
            ("Id", Value::from(1u64 << 50)),
            ("Config", map(vec![("message", Value::from("hi"))])),
            ("StartTime", Value::F64(1.7e9)),
        ]);
        let got = instance_status(&started, 42);
        assert_eq!((got.instance_id, got.started_at), (42, 1_700_000_000));
        assert!(got.config.is_some());
    }
}
