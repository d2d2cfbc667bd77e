//! The `plugin.*` RPC service: what each method does to the registries.
//!
//! One [`Service`] serves the whole process; every connection calls into it.
//! It holds no per-connection state (docs/protocol.md §2) and no Python: the
//! executor does whatever needs the interpreter.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rmpv::Value;

use crate::convert::json_to_value;
use crate::events::fail_closed::ClosingCall;
use crate::events::Events;
use crate::executor::{PluginHandle, SharedExecutor};
use crate::handover::Neighbours;
use crate::ids::IdAllocator;
use crate::instances::{unix_now, InFlight, Instance, Instances};
use crate::phase::Phase;
use crate::rpc::map;
use crate::rpc_error::RpcError;

/// What the server knows about one plugin it serves (a dedicated server
/// serves one, `kong-python-pluginserver -d DIR` one per file of the folder).
pub struct PluginMeta {
    pub name: String,
    pub phases: Vec<Phase>,
    /// The plugin-info object (`GetPluginInfo`, docs/protocol.md §1.4).
    pub info: Value,
    /// Bookkeeping keys Kong adds to `Config` that the plugin must not see
    /// (docs/protocol.md §6.5); keys starting with `__` are always removed.
    pub config_exclude: HashSet<String>,
    pub load_time: f64,
}

impl PluginMeta {
    /// Decodes Kong's `Config` JSON text and removes Kong's own keys that
    /// this plugin does not declare.
    fn config(&self, raw: &Value) -> Result<Value, String> {
        let config = match raw {
            Value::String(s) => {
                let json: serde_json::Value = serde_json::from_slice(s.as_bytes())
                    .map_err(|e| format!("Config is not valid JSON: {e}"))?;
                json_to_value(json)
            }
            Value::Nil => Value::Map(Vec::new()),
            // Tolerated for tools that send a map instead of JSON text.
            other => other.clone(),
        };
        let entries = match config {
            Value::Map(entries) => entries,
            Value::Array(items) if items.is_empty() => Vec::new(),
            _ => return Err("Config must be a JSON object".into()),
        };
        Ok(Value::Map(
            entries
                .into_iter()
                .filter(|(k, _)| {
                    k.as_str()
                        .is_none_or(|k| !k.starts_with("__") && !self.config_exclude.contains(k))
                })
                .collect(),
        ))
    }
}

pub struct Settings {
    /// How long an event may wait for Kong's next Step (docs/protocol.md §5.2.5).
    pub event_timeout: Duration,
    /// How long an instance may stay idle before it expires (§7.3).
    pub instance_ttl: Duration,
}

pub struct Service {
    /// Every plugin served on this socket; Kong names one in each
    /// StartInstance, and an instance's events run its plugin's handlers.
    pub plugins: Vec<PluginMeta>,
    pub settings: Settings,
    pub instances: Instances<PluginHandle>,
    pub events: Arc<Events>,
    pub executor: SharedExecutor,
    draining: AtomicBool,
    /// Set when draining began after a newer server took the socket path
    /// (`--reload`, or Kong starting a new server before the old one is
    /// gone): new work is then sent on to it instead of refused (`handover.rs`).
    successor: OnceLock<PathBuf>,
    /// Set when this server took its socket path from a live one (`--reload`,
    /// a Kong reload): a link to that server's socket, where a Step of an
    /// event unknown here is passed back (`handover.rs`).
    predecessor: OnceLock<PathBuf>,
    /// When the last request arrived, in ms since `started`: a replaced
    /// server leaves once Kong has left its connections quiet.
    last_request: AtomicU64,
    started: Instant,
    /// Requests being passed on to another server right now.
    forwarding: AtomicUsize,
    /// Connections open now (both serving models count them).
    pub connections: AtomicUsize,
}

/// A request being passed on to another server (`Service::forwarding`).
pub struct Forwarding<'a>(&'a AtomicUsize);

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A `HandleEvent` that passed its checks.
pub struct AcceptedEvent {
    pub id: u64,
    pub phase: Phase,
    /// Marks the instance busy until the event ends.
    pub instance: InFlight<PluginHandle>,
    /// `<plugin> <phase>`, for logs.
    pub label: Arc<str>,
}

/// A reply to encode: a result value or an error (`rpc_error.rs`).
pub type Reply = Result<Encoded, RpcError>;

/// A result to encode (`dispatch.rs`, `write_reply`).
#[derive(Debug, PartialEq)]
pub enum Encoded {
    Value(Value),
    /// `{"Data": "ret", "EventId": id}`: the event is over.
    Ret(u64),
    /// A PDK call of event `event` (an event failing closed in the looped model).
    Call {
        event: u64,
        call: ClosingCall,
    },
}

impl Service {
    pub fn new(plugins: Vec<PluginMeta>, settings: Settings, executor: SharedExecutor) -> Self {
        Service {
            plugins,
            settings,
            instances: Instances::new(IdAllocator::from_clock()),
            events: Arc::new(Events::new(IdAllocator::from_clock())),
            executor,
            draining: AtomicBool::new(false),
            successor: OnceLock::new(),
            predecessor: OnceLock::new(),
            last_request: AtomicU64::new(0),
            started: Instant::now(),
            forwarding: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        }
    }

    /// The plugin named `name`.
    fn plugin(&self, name: &str) -> Option<&PluginMeta> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The plugins' names, quoted, for error messages.
    fn plugin_names(&self) -> String {
        let names: Vec<String> = self
            .plugins
            .iter()
            .map(|p| format!("'{}'", p.name))
            .collect();
        names.join(", ")
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Drains as a server that a newer one replaced on the same socket path:
    /// Kong's pooled connections still lead here, and each one passes the
    /// new work on to the newer server (`handover.rs`); the Steps of the
    /// events in flight are served here.
    pub fn start_handing_over(&self, successor: &Path) {
        let _ = self.successor.set(successor.to_path_buf());
        self.start_draining();
    }

    /// Counts a request passed on to another server until the guard drops:
    /// the server does not stop while Kong waits for its reply.
    pub fn forwarding(&self) -> Forwarding<'_> {
        self.forwarding.fetch_add(1, Ordering::AcqRel);
        Forwarding(&self.forwarding)
    }

    /// Requests being passed on to another server right now.
    pub fn forwards(&self) -> usize {
        self.forwarding.load(Ordering::Acquire)
    }

    /// A request arrived on some connection.
    pub fn note_request(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_request.store(ms, Ordering::Relaxed);
    }

    /// How long no request has arrived on any connection.
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_request.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Remembers the link to the server this one replaced (`handover.rs`).
    pub fn set_predecessor(&self, link: PathBuf) {
        let _ = self.predecessor.set(link);
    }

    /// The link to the server this one replaced, if any.
    pub fn predecessor(&self) -> Option<&Path> {
        self.predecessor.get().map(PathBuf::as_path)
    }

    /// The socket of the newer server, once this one was replaced.
    pub fn successor(&self) -> Option<&Path> {
        self.successor.get().map(PathBuf::as_path)
    }

    /// The servers this one passes calls on to (`handover.rs`).
    pub fn neighbours(&self) -> Neighbours<'_> {
        Neighbours {
            successor: self.successor(),
            predecessor: self.predecessor(),
        }
    }

    /// Connections a replaced server keeps serving after its last event:
    /// Kong may still send new work on them, which is passed on to the newer
    /// server. Closing them ourselves could cross a request Kong is writing,
    /// so the server waits for Kong to close them (up to `--drain-timeout`).
    pub fn lingering(&self) -> usize {
        if self.is_replaced() {
            self.connections.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// How a draining server refuses new work: a server that a newer one
    /// replaced says so, and the connection passes the request on instead
    /// (`handover.rs`).
    fn refusal(&self) -> RpcError {
        if self.is_replaced() {
            RpcError::HandedOver
        } else {
            RpcError::ShuttingDown
        }
    }

    pub fn is_replaced(&self) -> bool {
        self.successor.get().is_some()
    }

    /// Events that have not ended yet: waiting for Kong or running.
    pub fn busy(&self) -> usize {
        self.events.len()
            + self.executor.waiting()
            + self.executor.running()
            + self.forwarding.load(Ordering::Acquire)
    }

    /// `StartInstance` on the calling thread (blocking: it runs the plugin's
    /// constructor through the executor).
    pub fn start_instance_now(&self, name: &str, config: &Value) -> Reply {
        if self.is_draining() {
            return Err(self.refusal());
        }
        let plugin = self.plugin(name).ok_or_else(|| {
            format!(
                "no plugin named '{name}' (this server serves {})",
                self.plugin_names()
            )
        })?;
        let config = plugin.config(config)?;
        let handle = self.executor.start_instance(name, &config).map_err(|e| {
            log::error!("starting an instance of {name} failed: {e}");
            RpcError::InstanceRefused(e)
        })?;
        let instance = self.instances.insert(name.to_string(), config, handle);
        log::info!("started instance #{} of {}", instance.id, instance.name);
        Ok(Encoded::Value(map(vec![
            ("Name", Value::from(instance.name.as_str())),
            ("Id", Value::from(instance.id)),
            ("Config", instance.config.clone()),
            ("StartTime", Value::F64(instance.start_time)),
        ])))
    }

    pub fn close_instance(&self, id: u64) -> Reply {
        let instance = self.instances.remove(id).ok_or_else(|| no_instance(id))?;
        log::info!("closed instance #{id} of {}", instance.name);
        Ok(Encoded::Value(map(vec![
            ("Name", Value::from(instance.name.as_str())),
            ("Id", Value::from(instance.id)),
            ("Config", instance.config.clone()),
        ])))
    }

    /// Checks a `HandleEvent` and gives its event an id; the caller runs it.
    pub fn accept_event(&self, id: u64, phase_name: &str) -> Result<AcceptedEvent, RpcError> {
        if self.is_draining() {
            return Err(self.refusal());
        }
        let instance = self.instances.acquire(id).ok_or_else(|| no_instance(id))?;
        let plugin_name = &instance.instance().name;
        let phase = Phase::parse(phase_name)
            .filter(|p| {
                self.plugin(plugin_name)
                    .is_some_and(|m| m.phases.contains(p))
            })
            .ok_or_else(|| {
                format!("plugin {plugin_name} has no handler for phase '{phase_name}'")
            })?;
        let label: Arc<str> = Arc::from(format!("{} {}", instance.instance().name, phase.name()));
        Ok(AcceptedEvent {
            id: self.events.next_id(),
            phase,
            instance,
            label,
        })
    }

    pub fn status(&self) -> Value {
        let all = self.instances.snapshot();
        let opt = |v: &std::sync::Mutex<Option<f64>>| {
            v.lock()
                .unwrap_or_else(|p| p.into_inner())
                .map_or(Value::Nil, Value::F64)
        };
        // The registry keeps one last start and close time for all plugins.
        let (last_start, last_close) = (
            opt(&self.instances.last_start),
            opt(&self.instances.last_close),
        );
        let plugins = self
            .plugins
            .iter()
            .map(|plugin| {
                let instances = all
                    .iter()
                    .filter(|i| i.name == plugin.name)
                    .map(|i| instance_status(i))
                    .collect();
                let entry = map(vec![
                    ("Name", Value::from(plugin.name.as_str())),
                    ("Modtime", Value::F64(plugin.load_time)),
                    ("LoadTime", Value::F64(plugin.load_time)),
                    ("Instances", Value::Array(instances)),
                    ("LastStartInstance", last_start.clone()),
                    ("LastCloseInstance", last_close.clone()),
                ]);
                (Value::from(plugin.name.as_str()), entry)
            })
            .collect();
        let mut status = vec![
            ("Pid", Value::from(std::process::id())),
            ("Plugins", Value::Map(plugins)),
            // Ours: what is in flight, to check that nothing leaks.
            (
                "Events",
                map(vec![
                    (
                        "Waiting",
                        Value::from(self.events.len() + self.executor.waiting()),
                    ),
                    ("Running", Value::from(self.executor.running())),
                ]),
            ),
            ("Time", Value::F64(unix_now())),
        ];
        // Ours: e.g. the worker processes and their pids.
        status.extend(self.executor.status());
        map(status)
    }

    /// `GetPluginInfo [name]`; without a name, the only plugin's.
    pub fn plugin_info(&self, name: Option<&str>) -> Reply {
        let plugin = match (name, self.plugins.as_slice()) {
            (Some(name), _) => self.plugin(name).ok_or_else(|| {
                format!(
                    "no plugin named '{name}' (this server serves {})",
                    self.plugin_names()
                )
            })?,
            (None, [only]) => only,
            (None, _) => {
                return Err(format!(
                    "GetPluginInfo needs a plugin name: this server serves {}",
                    self.plugin_names()
                )
                .into())
            }
        };
        Ok(Encoded::Value(plugin.info.clone()))
    }

    pub fn instance_status(&self, id: u64) -> Reply {
        let instance = self.instances.get(id).ok_or_else(|| no_instance(id))?;
        Ok(Encoded::Value(instance_status(&instance)))
    }

    /// Drops events Kong abandoned and instances nobody used for a while.
    pub fn reap(&self) {
        for (id, parked) in self.events.expire(self.settings.event_timeout) {
            log::warn!(
                "event {id} ({}) abandoned: no Step from Kong for {:?}; failing its pending PDK call",
                parked.label,
                self.settings.event_timeout
            );
        }
        for instance in self.instances.expire_idle(self.settings.instance_ttl) {
            log::info!(
                "instance #{} of {} expired after {:?} idle",
                instance.id,
                instance.name,
                self.settings.instance_ttl
            );
        }
    }
}

fn instance_status(i: &Instance<PluginHandle>) -> Value {
    map(vec![
        ("Name", Value::from(i.name.as_str())),
        ("Id", Value::from(i.id)),
        ("Config", i.config.clone()),
        ("StartTime", Value::F64(i.start_time)),
    ])
}

/// `SetPluginDir`: plugins are given at start; the folder only has to exist.
pub fn set_plugin_dir(dir: &Value) -> Reply {
    match dir.as_str() {
        Some(path) if std::path::Path::new(path).is_dir() => Ok(Encoded::Value(Value::from("ok"))),
        _ => Err(format!("{dir} is not a directory").into()),
    }
}

fn no_instance(id: u64) -> RpcError {
    RpcError::NoInstance(id)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::executor::{Executor, RemoteKey};
    use crate::rpc::{as_map, as_u64, field};

    /// Records which plugin each instance was created for.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Executor for Recorder {
        fn start_instance(&self, plugin: &str, _config: &Value) -> Result<PluginHandle, String> {
            let mut created = self.0.lock().unwrap_or_else(|p| p.into_inner());
            created.push(plugin.to_string());
            Ok(PluginHandle::Remote(RemoteKey::new(
                created.len() as u64,
                |_| {},
            )))
        }

        fn running(&self) -> usize {
            0
        }
    }

    fn meta(name: &str, phases: &[Phase], exclude: &[&str]) -> PluginMeta {
        PluginMeta {
            name: name.to_string(),
            phases: phases.to_vec(),
            info: map(vec![("Name", Value::from(name))]),
            config_exclude: exclude.iter().map(|k| k.to_string()).collect(),
            load_time: 0.0,
        }
    }

    fn two_plugins() -> (Service, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let service = Service::new(
            vec![
                meta("alpha", &[Phase::Access], &["route_id"]),
                meta("beta", &[Phase::Rewrite, Phase::Log], &[]),
            ],
            Settings {
                event_timeout: Duration::from_secs(1),
                instance_ttl: Duration::from_secs(1),
            },
            Arc::clone(&recorder) as SharedExecutor,
        );
        (service, recorder)
    }

    fn start(service: &Service, name: &str) -> Reply {
        let config = Value::from(r#"{"route_id": "r", "__seq__": 1, "x": 1}"#);
        service.start_instance_now(name, &config)
    }

    fn value(reply: Reply) -> Value {
        match reply {
            Ok(Encoded::Value(v)) => v,
            Ok(other) => panic!("{other:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn id_of(started: &Value) -> u64 {
        as_map(started)
            .and_then(|m| field(m, "Id"))
            .and_then(as_u64)
            .expect("an Id")
    }

    #[test]
    fn each_instance_is_created_and_run_as_its_own_plugin() {
        let (service, recorder) = two_plugins();
        let alpha = value(start(&service, "alpha"));
        let beta = value(start(&service, "beta"));
        assert_eq!(
            *recorder.0.lock().unwrap_or_else(|p| p.into_inner()),
            ["alpha", "beta"]
        );
        // Each plugin's own bookkeeping keys are removed; `__` keys always.
        let keys = |v: &Value| -> Vec<String> {
            let config = as_map(v).and_then(|m| field(m, "Config")).expect("Config");
            as_map(config)
                .expect("a map")
                .iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(keys(&alpha), ["x"]);
        assert_eq!(keys(&beta), ["route_id", "x"]);
        let event = |id: u64, phase: &str| service.accept_event(id, phase);
        assert!(event(id_of(&alpha), "access").is_ok());
        assert!(event(id_of(&beta), "rewrite").is_ok());
        let refused = event(id_of(&alpha), "rewrite").err().map(|e| e.to_string());
        assert_eq!(
            refused.as_deref(),
            Some("plugin alpha has no handler for phase 'rewrite'")
        );
    }

    #[test]
    fn unknown_names_are_refused_naming_the_plugins_served() {
        let (service, _) = two_plugins();
        assert_eq!(
            start(&service, "gamma")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("no plugin named 'gamma' (this server serves 'alpha', 'beta')")
        );
        assert!(service.plugin_info(None).is_err());
        let beta = value(service.plugin_info(Some("beta")));
        assert_eq!(
            as_map(&beta).and_then(|m| field(m, "Name")),
            Some(&Value::from("beta"))
        );
    }

    #[test]
    fn status_lists_every_plugin_with_its_own_instances() {
        let (service, _) = two_plugins();
        value(start(&service, "beta"));
        let status = service.status();
        let plugins = as_map(&status)
            .and_then(|m| field(m, "Plugins"))
            .and_then(as_map)
            .expect("Plugins");
        let count = |name: &str| {
            field(plugins, name)
                .and_then(as_map)
                .and_then(|p| field(p, "Instances"))
                .and_then(Value::as_array)
                .map(Vec::len)
        };
        assert_eq!((count("alpha"), count("beta")), (Some(0), Some(1)));
    }
}
