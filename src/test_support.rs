//! What the unit tests of several modules share: Kong's requests encoded
//! with a stock MessagePack encoder, a service of one plugin, and an
//! executor that only creates instances.

use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;

use crate::executor::{Executor, PluginHandle, RemoteKey, SharedExecutor};
use crate::phase::Phase;
use crate::service::{PluginMeta, Service, Settings};

/// Creates every instance as key 1 of a remote table; runs nothing.
pub struct InstancesOnly;

impl Executor for InstancesOnly {
    fn start_instance(&self, _plugin: &str, _config: &Value) -> Result<PluginHandle, String> {
        Ok(PluginHandle::Remote(RemoteKey::new(1, |_| {})))
    }

    fn running(&self) -> usize {
        0
    }
}

/// A service of one plugin, `p`, with an `access` phase.
pub fn one_plugin_service(event_timeout: Duration, executor: SharedExecutor) -> Service {
    Service::new(
        vec![PluginMeta {
            name: "p".into(),
            phases: vec![Phase::Access],
            info: Value::Nil,
            config_exclude: Default::default(),
            load_time: 0.0,
        }],
        Settings {
            event_timeout,
            instance_ttl: Duration::from_secs(60),
        },
        executor,
    )
}

/// Kong's request `[0, msgid, method, [arg]]`, encoded.
pub fn request(msgid: u64, method: &str, arg: Value) -> Vec<u8> {
    let frame = Value::Array(vec![
        Value::from(0),
        Value::from(msgid),
        Value::from(method),
        Value::Array(vec![arg]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &frame).expect("encode");
    out
}

/// [`one_plugin_service`] with [`InstancesOnly`].
pub fn service_with_instances_only(event_timeout: Duration) -> Service {
    one_plugin_service(event_timeout, Arc::new(InstancesOnly))
}
