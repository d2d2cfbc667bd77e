//! The worker processes as the core sees them: which process each one is
//! and whether it serves (`WorkerState`), its pool of idle connections, how
//! many events it runs (`Load`), and picking the least busy one.
//!
//! A worker's mutable state changes only through the methods here: its
//! supervisor (supervise.rs) reports spawns and exits, everyone else reads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::net::UnixStream;

use super::client::{Conn, Failure};
use super::{lock, StopSignal};
use crate::rpc::map;
use crate::wire::FrameDecoder;

/// Idle connections kept per worker; more are opened under load and closed
/// when they come back to a full pool.
const POOL: usize = 32;
/// How long an event or StartInstance waits for some worker to be up.
pub(super) const WAIT_FOR_WORKER: Duration = Duration::from_secs(10);

/// How to start one worker.
pub struct WorkerSpec {
    pub argv: Vec<String>,
    pub socket: PathBuf,
}

/// One worker slot. It outlives its processes: a process that dies is
/// replaced by a new one (a new generation) in the same slot. `index` and
/// `spec` never change; the rest is behind locks and atomics.
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) spec: WorkerSpec,
    state: Mutex<WorkerState>,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<Conn>>,
    restarts: AtomicU64,
    /// Why the last process ended, for status and startup errors.
    last_exit: Mutex<Option<String>>,
}

/// A snapshot of which process serves a worker slot. An event or instance
/// keeps the snapshot it was started with, so that it can tell when its
/// process has been replaced meanwhile.
#[derive(Clone, Copy, Debug)]
pub(super) struct WorkerState {
    /// Which process this is: bumped at every spawn.
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) up: bool,
}

impl Worker {
    fn new(index: usize, spec: WorkerSpec) -> Self {
        Worker {
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
        }
    }

    pub(super) fn state(&self) -> WorkerState {
        *lock(&self.state)
    }

    /// Why the last process ended, while it has not served since.
    pub(super) fn last_exit(&self) -> Option<String> {
        lock(&self.last_exit).clone()
    }

    /// A new process was spawned: not up until it serves and has the
    /// instances. Requests still naming the old generation fail from now on.
    pub(super) fn mark_spawned(&self, generation: u64, pid: u32) -> WorkerState {
        let st = WorkerState {
            generation,
            pid,
            up: false,
        };
        *lock(&self.state) = st;
        st
    }

    /// The process serves and has every known instance: events may come.
    pub(super) fn mark_up(&self) {
        lock(&self.state).up = true;
        *lock(&self.last_exit) = None;
    }

    /// The process is gone or going: no new events, and its pooled
    /// connections are closed so that no descriptor to it stays open.
    pub(super) fn mark_down(&self) {
        lock(&self.state).up = false;
        self.close_idle();
    }

    /// The process ended (`why`, for status and startup errors).
    pub(super) fn record_exit(&self, why: String) {
        self.restarts.fetch_add(1, Ordering::AcqRel);
        *lock(&self.last_exit) = Some(why);
    }

    /// No process could be spawned (`why`): like an exit, minus the restart.
    pub(super) fn record_spawn_failure(&self, why: String) {
        *lock(&self.last_exit) = Some(why);
    }

    pub(super) fn close_idle(&self) {
        lock(&self.idle).clear();
    }

    /// This worker's entry in the `plugin.GetStatus` result.
    pub(super) fn status(&self) -> Value {
        let st = self.state();
        map(vec![
            ("Index", Value::from(self.index)),
            ("Pid", Value::from(st.pid)),
            ("Up", Value::from(st.up)),
            (
                "InFlight",
                Value::from(self.in_flight.load(Ordering::Acquire)),
            ),
            (
                "Restarts",
                Value::from(self.restarts.load(Ordering::Acquire)),
            ),
            ("IdleConnections", Value::from(lock(&self.idle).len())),
        ])
    }

    /// An idle connection of the current process, or a new one.
    pub(super) async fn checkout(
        &self,
        st: WorkerState,
        max_frame: usize,
    ) -> Result<Conn, Failure> {
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

    /// Back to the pool, unless its process is gone or the pool is full.
    pub(super) fn checkin(&self, conn: Conn) {
        let st = self.state();
        let mut idle = lock(&self.idle);
        if st.up && conn.generation == st.generation && idle.len() < POOL {
            idle.push(conn);
        }
    }

    /// One RPC to the process `st` names.
    pub(super) async fn call(
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

/// Counts an event against its worker for as long as it lives there; the
/// count is what `Workers::pick` balances on.
pub(super) struct Load(Arc<Worker>);

impl Load {
    pub(super) fn new(worker: &Arc<Worker>) -> Self {
        worker.in_flight.fetch_add(1, Ordering::AcqRel);
        Load(Arc::clone(worker))
    }

    pub(super) fn worker(&self) -> &Arc<Worker> {
        &self.0
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every worker slot, and the counters shared by all of them.
pub(super) struct Workers {
    all: Vec<Arc<Worker>>,
    /// Generations are unique across slots, so a number names one process.
    next_generation: AtomicU64,
    /// Rotates the first worker looked at, so that ties spread.
    next_pick: AtomicUsize,
}

impl Workers {
    pub(super) fn new(specs: Vec<WorkerSpec>) -> Self {
        Workers {
            all: specs
                .into_iter()
                .enumerate()
                .map(|(index, spec)| Arc::new(Worker::new(index, spec)))
                .collect(),
            next_generation: AtomicU64::new(1),
            next_pick: AtomicUsize::new(0),
        }
    }

    pub(super) fn all(&self) -> &[Arc<Worker>] {
        &self.all
    }

    /// The generation of a process about to be spawned.
    pub(super) fn new_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// The up worker with the fewest events in flight, not in `skip`; waits
    /// a while for one while none is up (a respawn in progress).
    pub(super) async fn pick(
        &self,
        skip: &[usize],
        stop: &StopSignal,
    ) -> Option<(Arc<Worker>, WorkerState)> {
        let deadline = Instant::now() + WAIT_FOR_WORKER;
        let n = self.all.len();
        loop {
            let start = self.next_pick.fetch_add(1, Ordering::Relaxed);
            let mut best: Option<(&Arc<Worker>, WorkerState, usize)> = None;
            for i in 0..n {
                let w = &self.all[(start + i) % n];
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
            if stop.is_set() || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
