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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(socket: PathBuf) -> WorkerSpec {
        WorkerSpec {
            argv: Vec::new(),
            socket,
        }
    }

    /// `n` workers, all up (each its own process generation).
    fn workers(n: usize) -> Workers {
        let workers = Workers::new(
            (0..n)
                .map(|i| spec(format!("/nonexistent/{i}").into()))
                .collect(),
        );
        for (i, w) in workers.all().iter().enumerate() {
            w.mark_spawned(workers.new_generation(), 100 + i as u32);
            w.mark_up();
        }
        workers
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn pick(workers: &Workers, skip: &[usize]) -> Option<usize> {
        let stop = StopSignal::new();
        stop.set(); // nobody to wait for in these tests
        block_on(workers.pick(skip, &stop)).map(|(w, _)| w.index)
    }

    #[test]
    fn the_least_busy_up_worker_is_picked() {
        let workers = workers(3);
        let all = workers.all();
        let _loads = [Load::new(&all[0]), Load::new(&all[0]), Load::new(&all[1])];
        for _ in 0..3 {
            assert_eq!(pick(&workers, &[]), Some(2));
        }
        // Skipped (it failed this event already): the next least busy.
        assert_eq!(pick(&workers, &[2]), Some(1));
        // Down: never picked, however idle.
        all[2].mark_down();
        all[1].mark_down();
        assert_eq!(pick(&workers, &[]), Some(0));
    }

    #[test]
    fn a_finished_event_no_longer_counts() {
        let workers = workers(2);
        let all = workers.all();
        let busy = Load::new(&all[0]);
        assert_eq!(busy.worker().index, 0);
        assert_eq!(all[0].status()["InFlight"].as_u64(), Some(1));
        let _other = Load::new(&all[1]);
        let _more = Load::new(&all[1]);
        assert_eq!(pick(&workers, &[]), Some(0));
        drop(busy);
        assert_eq!(all[0].status()["InFlight"].as_u64(), Some(0));
    }

    #[test]
    fn ties_spread_over_the_workers() {
        let workers = workers(3);
        let mut picked: Vec<usize> = (0..3).filter_map(|_| pick(&workers, &[])).collect();
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2]);
    }

    #[test]
    fn with_no_worker_up_a_stopping_pick_gives_up_at_once() {
        let workers = workers(2);
        for w in workers.all() {
            w.mark_down();
        }
        assert_eq!(pick(&workers, &[]), None);
        let workers = super::Workers::new(Vec::new());
        assert_eq!(pick(&workers, &[]), None, "no worker at all");
    }

    #[test]
    fn a_pick_waits_for_a_worker_coming_up() {
        let workers = Arc::new(workers(1));
        workers.all()[0].mark_spawned(workers.new_generation(), 7);
        let stop = StopSignal::new();
        let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
        let w = Arc::clone(&workers);
        let upper = std::thread::spawn(move || {
            up_rx.recv().expect("go");
            w.all()[0].mark_up();
        });
        let picked = block_on(async {
            up_tx.send(()).expect("go");
            workers.pick(&[], &stop).await
        });
        let (w, st) = picked.expect("picked once up");
        assert_eq!((w.index, st.pid, st.up), (0, 7, true));
        upper.join().expect("thread");
    }

    #[test]
    fn generations_are_unique_and_a_spawn_is_not_up_yet() {
        let workers = workers(2);
        let (a, b) = (workers.new_generation(), workers.new_generation());
        assert!(b > a);
        let w = &workers.all()[0];
        let before = w.state().generation;
        let st = w.mark_spawned(a, 555);
        assert_eq!((st.generation, st.pid, st.up), (a, 555, false));
        assert_ne!(before, a);
        assert!(!w.state().up);
        assert_eq!(w.status()["Pid"].as_u64(), Some(555));
    }

    #[test]
    fn exits_count_as_restarts_until_the_worker_serves_again() {
        let workers = workers(1);
        let w = &workers.all()[0];
        assert_eq!(w.last_exit(), None);
        w.record_spawn_failure("no such file".into());
        assert_eq!(w.status()["Restarts"].as_u64(), Some(0), "never ran");
        assert_eq!(w.last_exit().as_deref(), Some("no such file"));
        w.record_exit("killed by signal 9".into());
        assert_eq!(w.status()["Restarts"].as_u64(), Some(1));
        assert_eq!(w.last_exit().as_deref(), Some("killed by signal 9"));
        w.mark_up();
        assert_eq!(w.last_exit(), None, "serving again");
        assert_eq!(w.status()["Restarts"].as_u64(), Some(1));
    }

    #[test]
    fn a_call_to_a_replaced_process_is_undelivered_without_connecting() {
        let workers = workers(1);
        let w = &workers.all()[0];
        let old = w.state();
        w.mark_spawned(workers.new_generation(), 9);
        // The socket path does not exist: only the generation check can
        // answer without an error from connect.
        match block_on(w.call(old, "plugin.GetStatus", &[], 1 << 20)) {
            Err(Failure::Undelivered(why)) => assert!(why.contains("replaced"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connections_are_pooled_for_the_current_process_only() {
        let dir = std::env::temp_dir().join(format!("kong-pdk-workers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("w.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let workers = Workers::new(vec![spec(socket)]);
        let w = Arc::clone(&workers.all()[0]);
        let st = w.mark_spawned(workers.new_generation(), 1);
        w.mark_up();
        let st = WorkerState { up: true, ..st };
        let idle = |w: &Worker| w.status()["IdleConnections"].as_u64();
        block_on(async {
            let conn = w.checkout(st, 1 << 20).await.expect("connected");
            let _accepted = listener.accept().expect("accepted");
            assert_eq!(conn.generation, st.generation);
            w.checkin(conn);
            assert_eq!(idle(&w), Some(1));
            // The pooled connection comes out again.
            let conn = w.checkout(st, 1 << 20).await.expect("pooled");
            assert_eq!(idle(&w), Some(0));
            // A connection of a process replaced meanwhile is not pooled.
            w.mark_spawned(workers.new_generation(), 2);
            w.mark_up();
            w.checkin(conn);
            assert_eq!(idle(&w), Some(0));
            // Down: the pool is emptied.
            let st = w.state();
            let conn = w.checkout(st, 1 << 20).await.expect("connected");
            w.checkin(conn);
            assert_eq!(idle(&w), Some(1));
            w.mark_down();
            assert_eq!(idle(&w), Some(0));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
