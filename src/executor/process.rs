//! The worker-process model (`-m [N]`): handlers run in worker processes.
//!
//! A worker is an ordinary thread-model server of the same plugin file on a
//! private socket (`cli.py --worker-socket`). This process, the core, keeps
//! Kong's socket and the registries and runs no Python per event: it plays
//! Kong towards the workers, with the same MessagePack-RPC (protocol.md §3.1,
//! §4). Each of Kong's instances is created once in every worker (never
//! pickled per event); each event goes to the worker with the fewest events in
//! flight, and a small task relays it (§5): the worker's `{Method, Args}`
//! becomes the reply to Kong through the event's [`EventLink`], Kong's Step
//! becomes a Step to the worker.
//!
//! Supervision lives here, one thread per worker: it spawns the process,
//! waits for its socket, re-creates the instances on it, and when the process
//! exits, marks it down, closes its pooled connections and spawns a new one.
//! An event whose worker died ends for Kong like a handler that raised.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Handle;

use super::{EventJob, Executor, Phase, PluginHandle, RemoteKey, Running};
use crate::events::{Answer, EventLink};
use crate::pdk_table::PdkTable;
use crate::rpc::{self, as_map, as_u64, field, map};
use crate::wire::FrameDecoder;

/// Idle connections kept per worker; more are opened under load and closed
/// when they come back to a full pool.
const POOL: usize = 32;
/// How long an event or StartInstance waits for some worker to be up.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(10);
/// How long a worker may take to start serving its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping worker gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a supervisor looks at its child.
const WATCH_PERIOD: Duration = Duration::from_millis(20);

/// How to start one worker.
pub struct WorkerSpec {
    pub argv: Vec<String>,
    pub socket: PathBuf,
}

pub struct ProcessExecutor {
    inner: Arc<Inner>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    plugin: String,
    runtime: Handle,
    max_frame: usize,
    workers: Vec<Arc<Worker>>,
    /// Kong's instances by key: their config and their id in each worker.
    table: Mutex<HashMap<u64, Arc<Entry>>>,
    next_key: AtomicU64,
    next_generation: AtomicU64,
    /// Rotates the first worker looked at, so that ties spread.
    next_pick: AtomicUsize,
    running: Arc<AtomicUsize>,
    /// Events that ended because their worker went away.
    lost: AtomicU64,
    stopping: AtomicBool,
    stop_lock: Mutex<()>,
    stop_cond: Condvar,
}

struct Entry {
    config: Value,
    /// Per worker: `(generation, instance id there)`. A respawned worker has
    /// a new generation, so its slot is stale until recreated.
    ids: Vec<tokio::sync::Mutex<Option<(u64, u64)>>>,
}

struct Worker {
    index: usize,
    spec: WorkerSpec,
    state: Mutex<WorkerState>,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<Conn>>,
    restarts: AtomicU64,
    /// Why the last process ended, for status and startup errors.
    last_exit: Mutex<Option<String>>,
}

#[derive(Clone, Copy, Debug)]
struct WorkerState {
    /// Which process this is: bumped at every spawn.
    generation: u64,
    pid: u32,
    up: bool,
}

/// One connection to a worker. Like Kong's, it carries one request at a time
/// (protocol.md §2) and may carry requests of any event.
struct Conn {
    stream: UnixStream,
    decoder: FrameDecoder,
    msgid: u64,
    generation: u64,
    pid: u32,
    chunk: Vec<u8>,
}

/// Why an RPC to a worker failed.
#[derive(Debug)]
enum Failure {
    /// Nothing reached the worker (connect or write failed): the request was
    /// not run, so it may go to another worker.
    Undelivered(String),
    /// The worker went away, or answered nonsense, after the request was sent.
    Lost(String),
    /// The worker answered with an RPC error.
    Remote(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Undelivered(e) | Failure::Lost(e) | Failure::Remote(e) => f.write_str(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProcessExecutor {
    /// Spawns the workers (each under its own supervisor thread).
    pub fn start(
        plugin: String,
        runtime: Handle,
        max_frame: usize,
        specs: Vec<WorkerSpec>,
    ) -> io::Result<Self> {
        let workers = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                Arc::new(Worker {
                    index,
                    spec,
                    state: Mutex::new(WorkerState {
                        generation: 0,
                        pid: 0,
                        up: false,
                    }),
                    in_flight: AtomicUsize::new(0),
                    idle: Mutex::new(Vec::new()),
                    restarts: AtomicU64::new(0),
                    last_exit: Mutex::new(None),
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            plugin,
            runtime,
            max_frame,
            workers,
            table: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            next_pick: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            lost: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_cond: Condvar::new(),
        });
        let executor = ProcessExecutor {
            inner: Arc::clone(&inner),
            supervisors: Mutex::new(Vec::new()),
        };
        for worker in &inner.workers {
            let (inner, worker) = (Arc::clone(&inner), Arc::clone(worker));
            let handle = std::thread::Builder::new()
                .name(format!("kong-pdk-worker{}", worker.index))
                .spawn(move || supervise(&inner, &worker))?;
            lock(&executor.supervisors).push(handle);
        }
        Ok(executor)
    }

    /// Blocks until every worker serves its socket. Fails when one exits
    /// before that (its own log says why) or takes longer than `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all_up = true;
            for w in &self.inner.workers {
                if let Some(why) = lock(&w.last_exit).as_ref() {
                    return Err(format!(
                        "worker process {} exited during startup ({why}); its log above says why",
                        w.index
                    ));
                }
                all_up &= w.state().up;
            }
            if all_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("worker processes not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProcessExecutor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Executor for ProcessExecutor {
    fn start_instance(&self, config: &Value) -> Result<PluginHandle, String> {
        let inner = &self.inner;
        let key = inner.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            config: config.clone(),
            ids: inner
                .workers
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        });
        lock(&inner.table).insert(key, Arc::clone(&entry));
        let weak = Arc::downgrade(inner);
        let handle = PluginHandle::Remote(RemoteKey::new(key, move |key| {
            if let Some(inner) = weak.upgrade() {
                inner.release(key);
            }
        }));
        // Created on every worker at once, so that a config the plugin
        // refuses fails here, at StartInstance, as in the thread model.
        let created = inner
            .runtime
            .block_on(Arc::clone(inner).start_everywhere(entry));
        // On error `handle` is dropped, which closes what was created.
        created.map(|()| handle)
    }

    fn run_event(&self, job: EventJob) {
        let running = Running::new(&self.inner.running);
        let inner = Arc::clone(&self.inner);
        self.inner.runtime.spawn(async move {
            let _running = running;
            inner.drive(job).await;
        });
    }

    fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    fn stop(&self) {
        {
            let _guard = lock(&self.inner.stop_lock);
            self.inner.stopping.store(true, Ordering::Release);
            self.inner.stop_cond.notify_all();
        }
        let supervisors: Vec<_> = lock(&self.supervisors).drain(..).collect();
        for handle in supervisors {
            if handle.join().is_err() {
                log::error!("a worker supervisor panicked");
            }
        }
        for w in &self.inner.workers {
            lock(&w.idle).clear();
        }
    }

    fn status(&self) -> Vec<(&'static str, Value)> {
        let workers = self
            .inner
            .workers
            .iter()
            .map(|w| {
                let st = w.state();
                map(vec![
                    ("Index", Value::from(w.index)),
                    ("Pid", Value::from(st.pid)),
                    ("Up", Value::from(st.up)),
                    ("InFlight", Value::from(w.in_flight.load(Ordering::Acquire))),
                    ("Restarts", Value::from(w.restarts.load(Ordering::Acquire))),
                    ("IdleConnections", Value::from(lock(&w.idle).len())),
                ])
            })
            .collect();
        vec![
            ("Workers", Value::Array(workers)),
            (
                "LostEvents",
                Value::from(self.inner.lost.load(Ordering::Acquire)),
            ),
        ]
    }
}

impl Worker {
    fn state(&self) -> WorkerState {
        *lock(&self.state)
    }

    /// An idle connection of the current process, or a new one.
    async fn checkout(&self, st: WorkerState, max_frame: usize) -> Result<Conn, Failure> {
        loop {
            let Some(conn) = lock(&self.idle).pop() else {
                break;
            };
            if conn.generation == st.generation && conn.is_open() {
                return Ok(conn);
            }
        }
        let stream = UnixStream::connect(&self.spec.socket)
            .await
            .map_err(|e| Failure::Undelivered(format!("cannot connect: {e}")))?;
        Ok(Conn {
            stream,
            decoder: FrameDecoder::new(max_frame),
            msgid: 0,
            generation: st.generation,
            pid: st.pid,
            chunk: vec![0; 16 * 1024],
        })
    }

    fn checkin(&self, conn: Conn) {
        let st = self.state();
        let mut idle = lock(&self.idle);
        if st.up && conn.generation == st.generation && idle.len() < POOL {
            idle.push(conn);
        }
    }

    /// One RPC to the process `st` names.
    async fn call(
        &self,
        st: WorkerState,
        method: &str,
        params: &[Value],
        max_frame: usize,
    ) -> Result<Value, Failure> {
        // A replaced process (also while the new one is being brought up:
        // its instances are re-created before it is marked up).
        if self.state().generation != st.generation {
            return Err(Failure::Undelivered(
                "the worker process was replaced".into(),
            ));
        }
        let mut conn = self.checkout(st, max_frame).await?;
        let result = conn.request(method, params).await;
        if matches!(result, Ok(_) | Err(Failure::Remote(_))) {
            self.checkin(conn);
        }
        result
    }
}

/// One event's line to its worker: every RPC of the event goes over the same
/// connection. While a thread-model handler waits for its next Step it reads
/// the connection that carried its last reply (events.rs `Lend`), so the
/// Step arrives right where it is awaited. The connection goes back to the
/// pool when the event ends.
struct Session {
    load: Load,
    st: WorkerState,
    conn: Option<Conn>,
    max_frame: usize,
}

impl Session {
    fn worker(&self) -> &Arc<Worker> {
        &self.load.0
    }

    async fn call(&mut self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        let w = Arc::clone(self.worker());
        if w.state().generation != self.st.generation {
            return Err(Failure::Undelivered(
                "the worker process was replaced".into(),
            ));
        }
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => w.checkout(self.st, self.max_frame).await?,
        };
        let result = conn.request(method, params).await;
        if matches!(result, Ok(_) | Err(Failure::Remote(_))) {
            self.conn = Some(conn);
        }
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.load.0.checkin(conn);
        }
    }
}

impl Conn {
    /// Whether the worker has not closed this idle connection. A worker that
    /// died closed all its connections, so the pool hands out no dead ones
    /// (a request written to one could not be told apart from a lost one).
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn request(&mut self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        self.msgid = self.msgid.wrapping_add(1);
        let request = encode_request(self.msgid, method, params);
        self.roundtrip(&request).await
    }

    async fn roundtrip(&mut self, request: &[u8]) -> Result<Value, Failure> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| Failure::Undelivered(format!("cannot write: {e}")))?;
        loop {
            while let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|e| Failure::Lost(format!("bad reply: {e}")))?
            {
                match parse_reply(frame, self.msgid) {
                    Incoming::ServerPid(pid) if pid == u64::from(self.pid) => {}
                    Incoming::ServerPid(pid) => {
                        return Err(Failure::Lost(format!(
                            "connected to pid {pid}, expected worker pid {}",
                            self.pid
                        )))
                    }
                    Incoming::Notification => {}
                    Incoming::Reply(result) => return result,
                    Incoming::Invalid(why) => return Err(Failure::Lost(why)),
                }
            }
            let n = self
                .stream
                .read(&mut self.chunk)
                .await
                .map_err(|e| Failure::Lost(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(Failure::Lost("the worker closed the connection".into()));
            }
            self.decoder.extend(&self.chunk[..n]);
        }
    }
}

/// `[0, msgid, method, params]` (protocol.md §3.1).
fn encode_request(msgid: u64, method: &str, params: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, 0);
    let _ = rmp::encode::write_uint(&mut out, msgid);
    rpc::write_str(&mut out, method);
    let _ = rmp::encode::write_array_len(&mut out, params.len() as u32);
    for p in params {
        rpc::write_value(&mut out, p);
    }
    out
}

enum Incoming {
    ServerPid(u64),
    Notification,
    Reply(Result<Value, Failure>),
    Invalid(String),
}

/// Reads a frame from a worker: a reply `[1, msgid, error, result]` or a
/// notification `[2, label, args]` in front of it (protocol.md §2, §3.1).
fn parse_reply(frame: Value, msgid: u64) -> Incoming {
    let Value::Array(items) = frame else {
        return Incoming::Invalid("reply is not an array".into());
    };
    match (items.first().and_then(as_u64), items.len()) {
        (Some(2), 3) => match (items[1].as_str(), &items[2]) {
            (Some("serverPid"), Value::String(s)) => s
                .as_str()
                .and_then(|s| s.parse().ok())
                .map_or(Incoming::Notification, Incoming::ServerPid),
            (Some("serverPid"), pid) => {
                as_u64(pid).map_or(Incoming::Notification, Incoming::ServerPid)
            }
            _ => Incoming::Notification,
        },
        (Some(1), 4) => {
            if as_u64(&items[1]) != Some(msgid) {
                return Incoming::Invalid(format!(
                    "reply to msgid {} instead of {msgid}",
                    items[1]
                ));
            }
            Incoming::Reply(match &items[2] {
                Value::Nil => Ok(items[3].clone()),
                Value::String(s) => Err(Failure::Remote(
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                )),
                other => Err(Failure::Remote(other.to_string())),
            })
        }
        _ => Incoming::Invalid(
            "reply is neither [1, msgid, error, result] nor a notification".into(),
        ),
    }
}

/// What an event's worker said: `"ret"` or a PDK call.
enum Output {
    Ret,
    Call { method: String, args: Vec<u8> },
}

/// `{Data, EventId}` from a HandleEvent or Step reply (protocol.md §4.1).
fn parse_output(result: &Value) -> Result<(Output, u64), String> {
    let entries = as_map(result).ok_or("event reply is not a map")?;
    let event_id = field(entries, "EventId")
        .and_then(as_u64)
        .ok_or("event reply has no EventId")?;
    let data = field(entries, "Data").ok_or("event reply has no Data")?;
    if data.as_str() == Some("ret") {
        return Ok((Output::Ret, event_id));
    }
    let call = as_map(data).ok_or("event reply Data is neither \"ret\" nor a call")?;
    let method = field(call, "Method")
        .and_then(Value::as_str)
        .ok_or("PDK call without a Method")?
        .to_string();
    let mut args = Vec::with_capacity(32);
    rpc::write_value(
        &mut args,
        field(call, "Args").unwrap_or(&Value::Array(Vec::new())),
    );
    Ok((Output::Call { method, args }, event_id))
}

/// Counts an event against its worker for as long as it lives there.
struct Load(Arc<Worker>);

impl Load {
    fn new(worker: &Arc<Worker>) -> Self {
        worker.in_flight.fetch_add(1, Ordering::AcqRel);
        Load(Arc::clone(worker))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`; true when the executor is stopping.
    fn pause(&self, d: Duration) -> bool {
        let guard = lock(&self.stop_lock);
        if self.is_stopping() {
            return true;
        }
        let _unused = self
            .stop_cond
            .wait_timeout(guard, d)
            .unwrap_or_else(|p| p.into_inner());
        self.is_stopping()
    }

    /// The up worker with the fewest events in flight, not in `skip`; waits
    /// a while for one while none is up (a respawn in progress).
    async fn pick(&self, skip: &[usize]) -> Option<(Arc<Worker>, WorkerState)> {
        let deadline = Instant::now() + WAIT_FOR_WORKER;
        let n = self.workers.len();
        loop {
            let start = self.next_pick.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<(&Arc<Worker>, WorkerState, usize)> = None;
            for i in 0..n {
                let w = &self.workers[(start + i) % n];
                let st = w.state();
                if !st.up || skip.contains(&w.index) {
                    continue;
                }
                let load = w.in_flight.load(Ordering::Acquire);
                if best.as_ref().is_none_or(|(_, _, l)| load < *l) {
                    best = Some((w, st, load));
                }
            }
            if let Some((w, st, _)) = best {
                return Some((Arc::clone(w), st));
            }
            if self.is_stopping() || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn entry(&self, key: u64) -> Option<Arc<Entry>> {
        lock(&self.table).get(&key).cloned()
    }

    /// The instance's id in worker `w` (process `st`), created there first
    /// if this process does not have it yet.
    async fn ensure(&self, entry: &Entry, w: &Worker, st: WorkerState) -> Result<u64, Failure> {
        let mut slot = entry.ids[w.index].lock().await;
        if let Some((generation, id)) = *slot {
            if generation == st.generation {
                return Ok(id);
            }
        }
        let params = [map(vec![
            ("Name", Value::from(self.plugin.as_str())),
            // The config as the core decoded it (a map, which the worker
            // accepts as well as JSON text): no second JSON round trip.
            ("Config", entry.config.clone()),
        ])];
        let result = w
            .call(st, "plugin.StartInstance", &params, self.max_frame)
            .await
            .map_err(|e| match e {
                // The worker says "starting instance: ..." itself; the core's
                // service adds that once more.
                Failure::Remote(msg) => Failure::Remote(
                    msg.strip_prefix("starting instance: ")
                        .unwrap_or(&msg)
                        .to_string(),
                ),
                other => other,
            })?;
        let id = as_map(&result)
            .and_then(|m| field(m, "Id"))
            .and_then(as_u64)
            .ok_or_else(|| Failure::Lost("StartInstance reply has no Id".into()))?;
        *slot = Some((st.generation, id));
        Ok(id)
    }

    /// StartInstance on every up worker, at once.
    async fn start_everywhere(self: Arc<Self>, entry: Arc<Entry>) -> Result<(), String> {
        if self.pick(&[]).await.is_none() {
            return Err("no worker process is running".into());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for w in &self.workers {
            let st = w.state();
            if !st.up {
                // Created when it comes up, or on its first event.
                continue;
            }
            let (inner, entry, w) = (Arc::clone(&self), Arc::clone(&entry), Arc::clone(w));
            tasks.spawn(async move { inner.ensure(&entry, &w, st).await.map(drop) });
        }
        let mut created = 0;
        let mut refused = None;
        let mut other = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => created += 1,
                // A worker being stopped (SIGTERM from outside) is replaced
                // and gets the instance then.
                Ok(Err(Failure::Remote(e))) if e.contains("shutting down") => other = Some(e),
                Ok(Err(Failure::Remote(e))) => refused = Some(e),
                Ok(Err(e)) => other = Some(e.to_string()),
                Err(e) => other = Some(e.to_string()),
            }
        }
        match (refused, created) {
            (Some(e), _) => Err(e),
            (None, 0) => Err(format!(
                "no worker process could start the instance: {}",
                other.unwrap_or_default()
            )),
            // A worker that failed here gets the instance when it is back.
            (None, _) => Ok(()),
        }
    }

    /// The registry let go of an instance: forget it and close it in the
    /// workers (best effort: a worker that misses it expires it itself).
    fn release(self: &Arc<Self>, key: u64) {
        let Some(entry) = lock(&self.table).remove(&key) else {
            return;
        };
        if self.is_stopping() {
            return;
        }
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            for w in &inner.workers {
                let slot = entry.ids[w.index].lock().await.take();
                let Some((generation, id)) = slot else {
                    continue;
                };
                let st = w.state();
                if st.up && st.generation == generation {
                    let params = [Value::from(id)];
                    if let Err(e) = w
                        .call(st, "plugin.CloseInstance", &params, inner.max_frame)
                        .await
                    {
                        log::debug!("closing instance #{id} in worker {}: {e}", w.index);
                    }
                }
            }
        });
    }

    /// Runs one event on a worker and relays it to Kong.
    async fn drive(self: Arc<Self>, job: EventJob) {
        let EventJob {
            phase,
            instance,
            link,
        } = job;
        let entry = match &instance.instance().handle {
            PluginHandle::Remote(k) => self.entry(k.key),
            PluginHandle::Python(_) => None,
        };
        let Some(entry) = entry else {
            // Cannot happen: the instance holds its key until it is dropped.
            self.end_lost(
                &link,
                phase,
                "its instance is unknown to the worker processes",
            )
            .await;
            return;
        };
        let mut tried = Vec::new();
        let deadline = Instant::now() + WAIT_FOR_WORKER;
        let (mut session, mut reply) = loop {
            let Some((w, st)) = self.pick(&tried).await else {
                self.end_lost(&link, phase, "no worker process is running")
                    .await;
                return;
            };
            let mut session = Session {
                load: Load::new(&w),
                st,
                conn: None,
                max_frame: self.max_frame,
            };
            match self.start_event(&entry, &mut session, phase).await {
                Ok(reply) => break (session, reply),
                // Not run: another worker may take it.
                Err(Failure::Undelivered(e)) => {
                    log::debug!("worker {}: {e}; trying another", w.index);
                    if Instant::now() >= deadline {
                        let why = format!("no worker process took it: {e}");
                        self.end_lost(&link, phase, &why).await;
                        return;
                    }
                    tried.push(w.index);
                    if tried.len() >= self.workers.len() {
                        // All tried: wait for the supervisors to notice.
                        tried.clear();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(e) => {
                    let why = format!("worker process {} (pid {}) lost it: {e}", w.index, st.pid);
                    self.end_lost(&link, phase, &why).await;
                    return;
                }
            }
        };
        let (w, st) = (Arc::clone(session.worker()), session.st);
        loop {
            let (output, remote_id) = match parse_output(&reply) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.end_lost(&link, phase, &format!("worker {}: {e}", w.index))
                        .await;
                    return;
                }
            };
            let (method, args) = match output {
                Output::Ret => {
                    let _ = link.done();
                    return;
                }
                Output::Call { method, args } => (method, args),
            };
            // The worker already ended its side of a terminal call (§5.2.3).
            if PdkTable::get()
                .function(&method)
                .is_some_and(|f| f.terminal)
            {
                let _ = link.terminal(&method, &args);
                return;
            }
            let Ok(answered) = link.call(&method, &args) else {
                // Kong cannot be reached any more: stop the worker's side too.
                abandon(&mut session, remote_id).await;
                return;
            };
            let Ok(resume) = answered.await else {
                // Kong abandoned the event (the reaper's deadline, or shutdown).
                abandon(&mut session, remote_id).await;
                return;
            };
            let (step, data) = match link.resume(resume) {
                Answer::Value(v) => ("plugin.Step", v),
                Answer::Error(e) => ("plugin.StepError", Some(Value::from(e))),
            };
            let mut params = vec![("EventId", Value::from(remote_id))];
            if let Some(data) = data {
                params.push(("Data", data));
            }
            reply = match session.call(step, &[map(params)]).await {
                Ok(reply) => reply,
                Err(e) => {
                    let why = format!("worker process {} (pid {}) lost it: {e}", w.index, st.pid);
                    self.end_lost(&link, phase, &why).await;
                    return;
                }
            };
        }
    }

    /// HandleEvent on worker `w`, creating the instance there first if
    /// needed; once more after "no plugin instance" (the worker expired it).
    async fn start_event(
        &self,
        entry: &Entry,
        session: &mut Session,
        phase: Phase,
    ) -> Result<Value, Failure> {
        let (w, st) = (Arc::clone(session.worker()), session.st);
        let mut retried = false;
        loop {
            let id = self.ensure(entry, &w, st).await?;
            let params = [map(vec![
                ("InstanceId", Value::from(id)),
                ("EventName", Value::from(phase.name())),
            ])];
            match session.call("plugin.HandleEvent", &params).await {
                Err(Failure::Remote(e)) if !retried && e.contains("no plugin instance") => {
                    retried = true;
                    let mut slot = entry.ids[w.index].lock().await;
                    if *slot == Some((st.generation, id)) {
                        *slot = None;
                    }
                }
                // Refused before anything ran (e.g. the worker is draining).
                Err(Failure::Remote(e)) => return Err(Failure::Undelivered(e)),
                other => return other,
            }
        }
    }

    /// Ends an event that lost its handler the way a handler that raised
    /// ends (thread.rs `on_exception`): the reason to Kong's error log, then a
    /// 500 where Kong can still respond, else `"ret"`. Failing closed keeps an
    /// auth plugin whose worker crashed from letting the request through.
    async fn end_lost(&self, link: &EventLink, phase: Phase, why: &str) {
        self.lost.fetch_add(1, Ordering::AcqRel);
        let message = format!("{} handler ended: {why}", link.label);
        log::error!("event {}: {message}", link.event_id);
        let mut args = Vec::new();
        let _ = rmp::encode::write_array_len(&mut args, 1);
        rpc::write_str(&mut args, &message);
        let Ok(answered) = link.call("kong.log.err", &args) else {
            return;
        };
        let Ok(resume) = answered.await else {
            return;
        };
        let _ = link.resume(resume);
        if phase.can_respond() {
            let mut args = Vec::new();
            let _ = rmp::encode::write_array_len(&mut args, 1);
            let _ = rmp::encode::write_uint(&mut args, 500);
            let _ = link.terminal("kong.response.error", &args);
        } else {
            let _ = link.done();
        }
    }

    /// Re-creates every known instance on a fresh worker process.
    async fn recreate(&self, w: &Worker, st: WorkerState) {
        let entries: Vec<Arc<Entry>> = lock(&self.table).values().cloned().collect();
        for entry in entries {
            if let Err(e) = self.ensure(&entry, w, st).await {
                log::warn!("worker {}: re-creating an instance: {e}", w.index);
            }
        }
    }
}

/// Ends the worker's side of an event Kong gave up on: the handler there
/// wakes with `EventAbandoned`, as it would under the thread model's reaper
/// (protocol.md §5.2.5). Best effort: the worker's own deadline, set a little
/// after the core's, catches what this misses.
async fn abandon(session: &mut Session, remote_id: u64) {
    let params = [map(vec![("EventId", Value::from(remote_id))])];
    if let Err(e) = session.call("plugin.AbandonEvent", &params).await {
        let index = session.worker().index;
        log::debug!("worker {index}: abandoning event {remote_id}: {e}");
    }
}

/// One worker's life cycle, on its own thread: spawn, wait until it serves,
/// re-create the instances, watch; when it exits, clean up and spawn anew.
fn supervise(inner: &Arc<Inner>, w: &Arc<Worker>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if inner.is_stopping() {
            return;
        }
        // The dead process's socket file: the new one binds afresh.
        let _ = std::fs::remove_file(&w.spec.socket);
        let Some((program, args)) = w.spec.argv.split_first() else {
            log::error!("worker {}: empty command", w.index);
            return;
        };
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C in a terminal reaches only the
            // core, which then stops the workers after draining.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                log::error!("worker {}: cannot start {program}: {e}", w.index);
                *lock(&w.last_exit) = Some(format!("cannot start: {e}"));
                if inner.pause(Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
        };
        let st = WorkerState {
            generation: inner.next_generation.fetch_add(1, Ordering::Relaxed),
            pid: child.id(),
            up: false,
        };
        *lock(&w.state) = st;
        let born = Instant::now();
        let status = match wait_serving(inner, w, &mut child, born) {
            Startup::Stop => return stop_child(w, &mut child),
            Startup::Exited(status) => status,
            Startup::Serving => {
                inner.runtime.block_on(inner.recreate(w, st));
                lock(&w.state).up = true;
                *lock(&w.last_exit) = None;
                log::info!("worker {} (pid {}) is serving", w.index, st.pid);
                match watch(inner, &mut child) {
                    None => return stop_child(w, &mut child),
                    Some(status) => status,
                }
            }
        };
        lock(&w.state).up = false;
        // Closes the pooled connections to the dead process: no fd stays.
        lock(&w.idle).clear();
        w.restarts.fetch_add(1, Ordering::AcqRel);
        *lock(&w.last_exit) = Some(describe_exit(status));
        log::warn!(
            "worker {} (pid {}) exited ({}); starting a new one",
            w.index,
            st.pid,
            describe_exit(status)
        );
        // Quick deaths back off up to 2 s; a worker that served a while is
        // replaced at once.
        backoff = if born.elapsed() > Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(Duration::from_secs(2))
        };
        if inner.pause(backoff) {
            return;
        }
    }
}

enum Startup {
    Serving,
    Exited(ExitStatus),
    Stop,
}

/// Waits until the worker's socket accepts a connection.
fn wait_serving(inner: &Inner, w: &Worker, child: &mut Child, born: Instant) -> Startup {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Startup::Exited(status),
            Ok(None) => {}
            Err(e) => log::warn!("worker {}: waiting for it: {e}", w.index),
        }
        // The socket file appears only once the worker listens (server.rs
        // `bind`); a probe that connects and closes is harmless (§1.3).
        if std::os::unix::net::UnixStream::connect(&w.spec.socket).is_ok() {
            return Startup::Serving;
        }
        if born.elapsed() > STARTUP_TIMEOUT {
            log::error!(
                "worker {} did not serve its socket within {STARTUP_TIMEOUT:?}; killing it",
                w.index
            );
            let _ = child.kill();
            return match child.wait() {
                Ok(status) => Startup::Exited(status),
                Err(_) => Startup::Exited(std::os::unix::process::ExitStatusExt::from_raw(9)),
            };
        }
        if inner.pause(Duration::from_millis(10)) {
            return Startup::Stop;
        }
    }
}

/// Waits for the child to exit (its status), or for the executor to stop.
fn watch(inner: &Inner, child: &mut Child) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if inner.pause(WATCH_PERIOD) {
            return None;
        }
    }
}

/// SIGTERM (the worker drains, like the core, and removes its socket), then
/// SIGKILL after a grace period. The events were drained by the core before.
fn stop_child(w: &Worker, child: &mut Child) {
    lock(&w.state).up = false;
    lock(&w.idle).clear();
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions. The pid still
    // names our child: only this thread waits on it and it has not been
    // reaped (try_wait just returned None), so it cannot have been reused.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    if sent == 0 {
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!(
            "worker {} (pid {pid}) still running {STOP_GRACE:?} after SIGTERM; killing it",
            w.index
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let out = encode_request(3, "plugin.Step", &[map(vec![("EventId", Value::from(7))])]);
        let v = rmpv::decode::read_value(&mut &out[..]).expect("msgpack");
        assert_eq!(v[0].as_u64(), Some(0));
        assert_eq!(v[1].as_u64(), Some(3));
        assert_eq!(v[2].as_str(), Some("plugin.Step"));
        assert_eq!(v[3][0]["EventId"].as_u64(), Some(7));
    }

    #[test]
    fn replies_and_notifications() {
        let pid = Value::Array(vec![2.into(), "serverPid".into(), 42.into()]);
        assert!(matches!(parse_reply(pid, 1), Incoming::ServerPid(42)));
        let pid = Value::Array(vec![2.into(), "serverPid".into(), "43".into()]);
        assert!(matches!(parse_reply(pid, 1), Incoming::ServerPid(43)));
        let ok = Value::Array(vec![1.into(), 5.into(), Value::Nil, "x".into()]);
        assert!(matches!(
            parse_reply(ok, 5),
            Incoming::Reply(Ok(Value::String(_)))
        ));
        let err = Value::Array(vec![1.into(), 5.into(), "boom".into(), Value::Nil]);
        assert!(matches!(
            parse_reply(err, 5),
            Incoming::Reply(Err(Failure::Remote(e))) if e == "boom"
        ));
        let wrong = Value::Array(vec![1.into(), 6.into(), Value::Nil, Value::Nil]);
        assert!(matches!(parse_reply(wrong, 5), Incoming::Invalid(_)));
        assert!(matches!(
            parse_reply(Value::from(1), 5),
            Incoming::Invalid(_)
        ));
    }

    #[test]
    fn event_outputs() {
        let ret = map(vec![("Data", "ret".into()), ("EventId", 9.into())]);
        assert!(matches!(parse_output(&ret), Ok((Output::Ret, 9))));
        let call = map(vec![
            (
                "Data",
                map(vec![
                    ("Method", "kong.request.get_header".into()),
                    ("Args", Value::Array(vec!["host".into()])),
                ]),
            ),
            ("EventId", 9.into()),
        ]);
        match parse_output(&call) {
            Ok((Output::Call { method, args }, 9)) => {
                assert_eq!(method, "kong.request.get_header");
                assert_eq!(args, vec![0x91, 0xa4, b'h', b'o', b's', b't']);
            }
            _ => panic!("not a call"),
        }
        assert!(parse_output(&Value::from("ret")).is_err());
    }
}
