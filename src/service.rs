//! The `plugin.*` RPC service: what each method does to the registries.
//!
//! One [`Service`] serves the whole process; every connection calls into it.
//! It holds no per-connection state (docs/protocol.md §2) and no Python: the
//! executor does whatever needs the interpreter.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmpv::Value;

use crate::convert::json_to_value;
use crate::events::{step_answer, EventLink, Events, Lend, Resume, Route};
use crate::executor::{EventJob, PluginHandle, SharedExecutor};
use crate::ids::IdAllocator;
use crate::instances::{unix_now, InFlight, Instance, Instances};
use crate::phase::Phase;
use crate::rpc::{as_map, as_u64, field, map, Method, Request};
use crate::writer::ConnWriter;

/// What the server knows about the plugin it serves.
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

pub struct Settings {
    /// How long an event may wait for Kong's next Step (docs/protocol.md §5.2.5).
    pub event_timeout: Duration,
    /// How long an instance may stay idle before it expires (§7.3).
    pub instance_ttl: Duration,
}

pub struct Service {
    pub plugin: PluginMeta,
    pub settings: Settings,
    pub instances: Instances<PluginHandle>,
    pub events: Arc<Events>,
    pub executor: SharedExecutor,
    draining: AtomicBool,
    /// Set when draining began after a newer server took the socket path
    /// (`--reload`, or Kong starting a new server before the old one is
    /// gone): new work is then sent on to it instead of refused (`handover.rs`).
    successor: OnceLock<PathBuf>,
    /// Connections open now (both serving models count them).
    pub connections: AtomicUsize,
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

/// How a server that a newer one replaced refuses new work that slipped past
/// the connection's check (it began draining meanwhile): the connection
/// passes the request on instead (`handover.rs`).
pub const HANDED_OVER: &str = "plugin server was replaced by a newer one";

/// A reply to encode: a result value or an error string.
pub type Reply = Result<Encoded, String>;

/// A result to encode, or none because the handler replies itself.
pub enum Encoded {
    Value(Value),
    /// The event's handler writes this reply itself (see `events.rs`).
    Deferred,
}

impl Service {
    pub fn new(plugin: PluginMeta, settings: Settings, executor: SharedExecutor) -> Self {
        Service {
            plugin,
            settings,
            instances: Instances::new(IdAllocator::from_clock()),
            events: Arc::new(Events::new(IdAllocator::from_clock())),
            executor,
            draining: AtomicBool::new(false),
            successor: OnceLock::new(),
            connections: AtomicUsize::new(0),
        }
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

    /// The socket of the newer server, once this one was replaced.
    pub fn successor(&self) -> Option<&Path> {
        self.successor.get().map(PathBuf::as_path)
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

    fn refusal(&self) -> String {
        if self.is_replaced() {
            HANDED_OVER.into()
        } else {
            "plugin server is shutting down".into()
        }
    }

    fn is_replaced(&self) -> bool {
        self.successor.get().is_some()
    }

    /// Events that have not ended yet: waiting for Kong or running.
    pub fn busy(&self) -> usize {
        self.events.len() + self.executor.waiting() + self.executor.running()
    }

    /// Runs one request. `lend` is the connection's reading, for the handler
    /// of a HandleEvent or Step to keep while it waits (see `events::Lend`).
    pub async fn dispatch(
        self: &Arc<Self>,
        req: &Request,
        writer: &Arc<ConnWriter>,
        lend: Option<Lend>,
    ) -> Reply {
        let method = Method::parse(&req.method)?;
        let first = req.params.first().unwrap_or(&Value::Nil);
        let route = Route {
            writer: Arc::clone(writer),
            msgid: req.msgid,
            lend,
        };
        match method {
            Method::StartInstance => self.start_instance(first).await,
            Method::CloseInstance => self.close_instance(first),
            Method::HandleEvent => self.handle_event(first, route),
            Method::Step { error } => self.step(first, error, route),
            Method::GetStatus => Ok(Encoded::Value(self.status())),
            Method::GetPluginInfo => self.plugin_info(first),
            Method::InstanceStatus => self.instance_status(first),
            Method::SetPluginDir => set_plugin_dir(first),
            Method::AbandonEvent => self.abandon_event(first),
        }
    }

    /// Drops a parked event as the reaper does (docs/protocol.md §5.2.5): its
    /// handler wakes with `EventAbandoned`. Sent by the core of the
    /// worker-process model when Kong abandoned the event there.
    fn abandon_event(&self, arg: &Value) -> Reply {
        let id = as_map(arg)
            .and_then(|m| field(m, "EventId"))
            .and_then(as_u64)
            .ok_or("AbandonEvent expects {EventId}")?;
        let parked = self
            .events
            .take(id)
            .ok_or_else(|| format!("event id {id} not found"))?;
        log::info!("event {id} abandoned by the core process");
        drop(parked);
        Ok(Encoded::Value(Value::from("ok")))
    }

    async fn start_instance(self: &Arc<Self>, arg: &Value) -> Reply {
        let this = Arc::clone(self);
        let arg = arg.clone();
        tokio::task::spawn_blocking(move || this.start_instance_now(&arg))
            .await
            .map_err(|e| format!("starting instance: {e}"))?
    }

    /// `StartInstance` on the calling thread (blocking: it runs the plugin's
    /// constructor through the executor).
    pub fn start_instance_now(&self, arg: &Value) -> Reply {
        if self.is_draining() {
            return Err(self.refusal());
        }
        let entries = as_map(arg).ok_or("StartInstance expects {Name, Config}")?;
        let name = field(entries, "Name").and_then(Value::as_str).unwrap_or("");
        if name != self.plugin.name {
            return Err(format!(
                "no plugin named '{name}' (this server serves '{}')",
                self.plugin.name
            ));
        }
        let config = self.plugin_config(field(entries, "Config").unwrap_or(&Value::Nil))?;
        let handle = self.executor.start_instance(&config).map_err(|e| {
            log::error!("starting an instance of {name} failed: {e}");
            format!("starting instance: {e}")
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

    /// Decodes Kong's `Config` JSON text and removes Kong's own keys.
    fn plugin_config(&self, raw: &Value) -> Result<Value, String> {
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
                    k.as_str().is_none_or(|k| {
                        !k.starts_with("__") && !self.plugin.config_exclude.contains(k)
                    })
                })
                .collect(),
        ))
    }

    fn close_instance(&self, arg: &Value) -> Reply {
        let id = instance_id_arg(arg)?;
        let instance = self.instances.remove(id).ok_or_else(|| no_instance(id))?;
        log::info!("closed instance #{id} of {}", instance.name);
        Ok(Encoded::Value(map(vec![
            ("Name", Value::from(instance.name.as_str())),
            ("Id", Value::from(instance.id)),
            ("Config", instance.config.clone()),
        ])))
    }

    fn handle_event(&self, arg: &Value, route: Route) -> Reply {
        let event = self.accept_event(arg)?;
        self.executor.run_event(EventJob {
            phase: event.phase,
            instance: event.instance,
            link: EventLink::new(event.id, event.label, Arc::clone(&self.events), route),
        });
        Ok(Encoded::Deferred)
    }

    /// Checks a `HandleEvent` and gives its event an id; the caller runs it.
    pub fn accept_event(&self, arg: &Value) -> Result<AcceptedEvent, String> {
        let entries = as_map(arg).ok_or("HandleEvent expects {InstanceId, EventName}")?;
        let id = field(entries, "InstanceId")
            .and_then(as_u64)
            .ok_or("HandleEvent expects an integer InstanceId")?;
        let phase_name = field(entries, "EventName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if self.is_draining() {
            return Err(self.refusal());
        }
        let instance = self.instances.acquire(id).ok_or_else(|| no_instance(id))?;
        let phase = Phase::parse(phase_name)
            .filter(|p| self.plugin.phases.contains(p))
            .ok_or_else(|| {
                format!(
                    "plugin {} has no handler for phase '{phase_name}'",
                    self.plugin.name
                )
            })?;
        let label: Arc<str> = Arc::from(format!("{} {}", instance.instance().name, phase.name()));
        Ok(AcceptedEvent {
            id: self.events.next_id(),
            phase,
            instance,
            label,
        })
    }

    /// The methods that need no event and no waiting, answered on the
    /// calling thread (the looped model); `None` for HandleEvent, Step and
    /// AbandonEvent, which the caller handles.
    pub fn answer_now(&self, method: Method, first: &Value) -> Option<Reply> {
        Some(match method {
            Method::StartInstance => self.start_instance_now(first),
            Method::CloseInstance => self.close_instance(first),
            Method::GetStatus => Ok(Encoded::Value(self.status())),
            Method::GetPluginInfo => self.plugin_info(first),
            Method::InstanceStatus => self.instance_status(first),
            Method::SetPluginDir => set_plugin_dir(first),
            Method::HandleEvent | Method::Step { .. } | Method::AbandonEvent => return None,
        })
    }

    fn step(&self, arg: &Value, is_error: bool, route: Route) -> Reply {
        let entries = as_map(arg).ok_or("Step expects {EventId, Data}")?;
        let id = field(entries, "EventId")
            .and_then(as_u64)
            .ok_or("Step expects an integer EventId")?;
        let data = field(entries, "Data").cloned();
        let parked = self
            .events
            .take(id)
            .ok_or_else(|| format!("event id {id} not found (it has ended or was abandoned)"))?;
        let answer = step_answer(data, is_error);
        match parked.resume(Resume { answer, route }) {
            Ok(()) => Ok(Encoded::Deferred),
            // The handler is gone without ending its event: end it here.
            Err(_) => Ok(Encoded::Value(map(vec![
                ("Data", Value::from("ret")),
                ("EventId", Value::from(id)),
            ]))),
        }
    }

    pub fn status(&self) -> Value {
        let instances: Vec<Value> = self
            .instances
            .snapshot()
            .iter()
            .map(|i| instance_status(i))
            .collect();
        let opt = |v: &std::sync::Mutex<Option<f64>>| {
            v.lock()
                .unwrap_or_else(|p| p.into_inner())
                .map_or(Value::Nil, Value::F64)
        };
        let plugin = map(vec![
            ("Name", Value::from(self.plugin.name.as_str())),
            ("Modtime", Value::F64(self.plugin.load_time)),
            ("LoadTime", Value::F64(self.plugin.load_time)),
            ("Instances", Value::Array(instances)),
            ("LastStartInstance", opt(&self.instances.last_start)),
            ("LastCloseInstance", opt(&self.instances.last_close)),
        ]);
        let mut status = vec![
            ("Pid", Value::from(std::process::id())),
            (
                "Plugins",
                Value::Map(vec![(Value::from(self.plugin.name.as_str()), plugin)]),
            ),
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

    fn plugin_info(&self, arg: &Value) -> Reply {
        match arg.as_str() {
            Some(name) if name != self.plugin.name => Err(format!("no plugin named '{name}'")),
            _ => Ok(Encoded::Value(self.plugin.info.clone())),
        }
    }

    fn instance_status(&self, arg: &Value) -> Reply {
        let id = instance_id_arg(arg)?;
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

/// CloseInstance and InstanceStatus take a bare id; accept `{Id}` too.
fn instance_id_arg(arg: &Value) -> Result<u64, String> {
    as_u64(arg)
        .or_else(|| as_map(arg).and_then(|m| field(m, "Id")).and_then(as_u64))
        .ok_or_else(|| "expected an instance id".to_string())
}

fn set_plugin_dir(first: &Value) -> Reply {
    match first.as_str() {
        Some(dir) if std::path::Path::new(dir).is_dir() => Ok(Encoded::Value(Value::from("ok"))),
        _ => Err(format!("{first} is not a directory")),
    }
}

/// The only wording that makes Kong start the instance again (docs/protocol.md §7.1).
fn no_instance(id: u64) -> String {
    format!("no plugin instance #{id}")
}
