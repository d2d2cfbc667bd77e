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
use crate::events::{step_answer, EventLink, Events, Lend, Resume, Route, ServeLent, Served};
use crate::executor::{EventJob, PluginHandle, SharedExecutor};
use crate::ids::IdAllocator;
use crate::instances::{unix_now, InFlight, Instance, Instances};
use crate::phase::Phase;
use crate::rpc::{self, as_map, as_u64, field, map, Method, Request, StepArgs};
use crate::rpc_error::RpcError;
use crate::writer::ConnWriter;

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

/// A result to encode, or none because the handler replies itself.
pub enum Encoded {
    Value(Value),
    /// The event's handler writes this reply itself (see `events/link.rs`).
    Deferred,
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
            Method::HandleEvent => self.handle_event(first, route).0,
            Method::Step { error } => self.step(first, error, route).0,
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
        let parked = self.events.take(id).ok_or(RpcError::UnknownEvent(id))?;
        log::info!("event {id} abandoned by the core process");
        drop(parked);
        Ok(Encoded::Value(Value::from("ok")))
    }

    async fn start_instance(self: &Arc<Self>, arg: &Value) -> Reply {
        let this = Arc::clone(self);
        let arg = arg.clone();
        tokio::task::spawn_blocking(move || this.start_instance_now(&arg))
            .await
            .map_err(|e| RpcError::InstanceRefused(e.to_string()))?
    }

    /// `StartInstance` on the calling thread (blocking: it runs the plugin's
    /// constructor through the executor).
    pub fn start_instance_now(&self, arg: &Value) -> Reply {
        if self.is_draining() {
            return Err(self.refusal());
        }
        let entries = as_map(arg).ok_or("StartInstance expects {Name, Config}")?;
        let name = field(entries, "Name").and_then(Value::as_str).unwrap_or("");
        let plugin = self.plugin(name).ok_or_else(|| {
            format!(
                "no plugin named '{name}' (this server serves {})",
                self.plugin_names()
            )
        })?;
        let config = plugin.config(field(entries, "Config").unwrap_or(&Value::Nil))?;
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

    /// Starts an event; the route comes back with an error, for its reply.
    fn handle_event(&self, arg: &Value, route: Route) -> (Reply, Option<Route>) {
        let event = match self.accept_event(arg) {
            Ok(event) => event,
            Err(e) => return (Err(e), Some(route)),
        };
        self.executor.run_event(EventJob {
            phase: event.phase,
            instance: event.instance,
            link: EventLink::new(event.id, event.label, Arc::clone(&self.events), route),
        });
        (Ok(Encoded::Deferred), None)
    }

    /// Checks a `HandleEvent` and gives its event an id; the caller runs it.
    pub fn accept_event(&self, arg: &Value) -> Result<AcceptedEvent, RpcError> {
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

    /// Resumes a parked event; the route comes back when the reply is the
    /// caller's to write.
    fn step(&self, arg: &Value, is_error: bool, route: Route) -> (Reply, Option<Route>) {
        let StepArgs { event_id: id, data } = match StepArgs::parse(Some(arg)) {
            Ok(step) => step,
            Err(e) => return (Err(e.into()), Some(route)),
        };
        let Some(parked) = self.events.take(id) else {
            return (Err(RpcError::UnknownEvent(id)), Some(route));
        };
        let answer = step_answer(data, is_error);
        match parked.resume(Resume { answer, route }) {
            Ok(()) => (Ok(Encoded::Deferred), None),
            // The handler is gone without ending its event: end it here.
            Err(resume) => (
                Ok(Encoded::Value(map(vec![
                    ("Data", Value::from("ret")),
                    ("EventId", Value::from(id)),
                ]))),
                Some(resume.route),
            ),
        }
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
    fn plugin_info(&self, arg: &Value) -> Reply {
        let plugin = match (arg.as_str(), self.plugins.as_slice()) {
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

/// A handler's thread serves the HandleEvents and Steps that come on the
/// connection it reads (`events/lent.rs`, `executor/thread/linger.rs`), as
/// the connection's I/O task would, without waking it.
impl ServeLent for Service {
    fn takes(&self, req: &Request) -> bool {
        // A replaced server passes new work on from the I/O task
        // (`handover.rs`), and so does a server that replaced one: a Step of
        // an event unknown here goes back to the older server.
        match Method::parse(&req.method) {
            _ if self.successor().is_some() => false,
            Ok(Method::HandleEvent) => true,
            Ok(Method::Step { .. }) => {
                self.predecessor().is_none()
                    || StepArgs::parse(req.params.first())
                        .is_ok_and(|step| self.events.contains(step.event_id))
            }
            _ => false,
        }
    }

    fn serve_lent(&self, req: Request, writer: &Arc<ConnWriter>, lend: Lend) -> Served {
        self.note_request();
        let first = req.params.first().unwrap_or(&Value::Nil);
        let step = match Method::parse(&req.method) {
            Ok(Method::HandleEvent) => None,
            Ok(Method::Step { error }) => Some(error),
            _ => return Served::GiveBack(lend),
        };
        let route = Route {
            writer: Arc::clone(writer),
            msgid: req.msgid,
            lend: Some(lend),
        };
        let (reply, route) = match step {
            None => self.handle_event(first, route),
            Some(error) => self.step(first, error, route),
        };
        let mut out = Vec::new();
        match reply {
            Ok(Encoded::Deferred) => return Served::Passed,
            Ok(Encoded::Value(v)) => rpc::write_ok(&mut out, req.msgid, &v),
            Err(e) => {
                log::log!(e.log_level(), "{}: {e}", req.method);
                rpc::write_error(&mut out, req.msgid, &e.to_string());
            }
        }
        if writer.write_all(&out).is_err() {
            log::debug!("connection closed before the reply was written");
        }
        match route.and_then(|r| r.lend) {
            Some(lend) => Served::Kept(lend),
            None => Served::Passed,
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
        _ => Err(format!("{first} is not a directory").into()),
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

        fn run_event(&self, _job: EventJob) {}

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
        service.start_instance_now(&map(vec![("Name", Value::from(name)), ("Config", config)]))
    }

    fn value(reply: Reply) -> Value {
        match reply {
            Ok(Encoded::Value(v)) => v,
            Ok(Encoded::Deferred) => panic!("deferred"),
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
        let event = |id: u64, phase: &str| {
            service.accept_event(&map(vec![
                ("InstanceId", Value::from(id)),
                ("EventName", Value::from(phase)),
            ]))
        };
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
        assert!(service.plugin_info(&Value::Nil).is_err());
        let beta = value(service.plugin_info(&Value::from("beta")));
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
