//! The worker-process model (`-m [N]`): handlers run in worker processes.
//!
//! A worker is an ordinary thread-model server of the same plugin file (or
//! plugin folder, `kong-python-pluginserver -d`) on a private socket (`cli.py
//! --worker-socket`), so it serves the same plugins by name. This process, the core, keeps
//! Kong's socket and the registries and runs no Python per event: it plays
//! Kong towards the workers, with the same MessagePack-RPC (docs/protocol.md §3.1,
//! §4). Each of Kong's instances is created once in every worker (never
//! pickled per event); each event goes to the worker with the fewest events in
//! flight, and a small task relays it (§5). A worker that exits is replaced;
//! an event whose worker died ends for Kong like a handler that raised.
//!
//! This file is the [`Executor`] and the state its parts share (`Inner`).
//! The parts, each in its own file:
//! - `workers.rs`: the worker slots, their connection pools and load, and
//!   picking the least busy one;
//! - `instances.rs`: Kong's instances and their copies in every worker;
//! - `relay.rs`: one event, from `plugin.HandleEvent` to its end;
//! - `supervise.rs`: one thread per worker that spawns, watches and replaces
//!   its process;
//! - `client.rs`: the RPC connection to a worker and its reply shapes.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::runtime::Handle;

mod client;
#[cfg(test)]
mod fake_worker;
mod instances;
mod relay;
mod supervise;
mod workers;

pub use workers::WorkerSpec;

use crate::executor::{EventJob, Executor, PluginHandle, RemoteKey, Running, RunsEvents};
use instances::Entry;
use supervise::supervise;
use workers::Workers;

pub struct ProcessExecutor {
    inner: Arc<Inner>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

/// What the executor, the event relays and the supervisors share.
struct Inner {
    runtime: Handle,
    max_frame: usize,
    workers: Workers,
    /// Kong's instances by key: their config and their id in each worker.
    table: Mutex<HashMap<u64, Arc<Entry>>>,
    next_key: AtomicU64,
    running: Arc<AtomicUsize>,
    /// Events that ended because their worker went away.
    lost: AtomicU64,
    stop: StopSignal,
}

/// Set once, by `stop`. The supervisors sleep on it between looks at their
/// child, so that stopping wakes them at once.
struct StopSignal {
    set: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

impl StopSignal {
    fn new() -> Self {
        StopSignal {
            set: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    fn set(&self) {
        let _guard = lock(&self.lock);
        self.set.store(true, Ordering::Release);
        self.cond.notify_all();
    }

    /// Sleeps up to `d`; true when the executor is stopping.
    fn pause(&self, d: Duration) -> bool {
        let guard = lock(&self.lock);
        if self.is_set() {
            return true;
        }
        let _unused = self
            .cond
            .wait_timeout(guard, d)
            .unwrap_or_else(|p| p.into_inner());
        self.is_set()
    }
}

/// Takes a lock even when a panic poisoned it: every critical section here is
/// one assignment, push, pop or lookup, so a panic cannot leave it half-done.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProcessExecutor {
    /// Spawns the workers (each under its own supervisor thread).
    pub fn start(runtime: Handle, max_frame: usize, specs: Vec<WorkerSpec>) -> io::Result<Self> {
        let inner = Arc::new(Inner {
            runtime,
            max_frame,
            workers: Workers::new(specs),
            table: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            running: Arc::new(AtomicUsize::new(0)),
            lost: AtomicU64::new(0),
            stop: StopSignal::new(),
        });
        let executor = ProcessExecutor {
            inner: Arc::clone(&inner),
            supervisors: Mutex::new(Vec::new()),
        };
        for worker in inner.workers.all() {
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
            for w in self.inner.workers.all() {
                if let Some(why) = w.last_exit() {
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

impl RunsEvents for ProcessExecutor {
    fn run_event(&self, job: EventJob) {
        let running = Running::new(&self.inner.running);
        let inner = Arc::clone(&self.inner);
        self.inner.runtime.spawn(async move {
            let _running = running;
            inner.drive(job).await;
        });
    }
}

impl Executor for ProcessExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        let inner = &self.inner;
        let (key, entry) = inner.add_entry(plugin, config);
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

    fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.inner.stop.set();
        let supervisors: Vec<_> = lock(&self.supervisors).drain(..).collect();
        for handle in supervisors {
            if handle.join().is_err() {
                log::error!("a worker supervisor panicked");
            }
        }
        for w in self.inner.workers.all() {
            w.close_idle();
        }
    }

    fn status(&self) -> Vec<(&'static str, Value)> {
        let workers = self
            .inner
            .workers
            .all()
            .iter()
            .map(|w| w.status())
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
