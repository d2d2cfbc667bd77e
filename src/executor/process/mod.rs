//! The worker-process model (`-m [N]`): handlers run in worker processes.
//!
//! A worker is an ordinary thread-model server of the same plugin file on a
//! private socket (`cli.py --worker-socket`). This process, the core, keeps
//! Kong's socket and the registries and runs no Python per event: it plays
//! Kong towards the workers, with the same MessagePack-RPC (docs/protocol.md §3.1,
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
use tokio::net::UnixStream;
use tokio::runtime::Handle;

mod client;
mod supervise;

use client::{parse_output, Conn, Failure, Output};
use supervise::supervise;

use super::{EventJob, Executor, Phase, PluginHandle, RemoteKey, Running};
use crate::events::{Answer, EventLink};
use crate::pdk_table::PdkTable;
use crate::rpc::{as_map, as_u64, field, map};
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

    /// Ends an event that lost its handler: failed closed (fail_closed.rs),
    /// so an auth plugin whose worker crashed never lets the request through.
    async fn end_lost(&self, link: &EventLink, phase: Phase, why: &str) {
        self.lost.fetch_add(1, Ordering::AcqRel);
        let message = format!("{} handler ended: {why}", link.label);
        log::error!("event {}: {message}", link.event_id);
        super::fail_closed::fail_closed(link, phase, &message).await;
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
/// (docs/protocol.md §5.2.5). Best effort: the worker's own deadline, set a little
/// after the core's, catches what this misses.
async fn abandon(session: &mut Session, remote_id: u64) {
    let params = [map(vec![("EventId", Value::from(remote_id))])];
    if let Err(e) = session.call("plugin.AbandonEvent", &params).await {
        let index = session.worker().index;
        log::debug!("worker {index}: abandoning event {remote_id}: {e}");
    }
}
