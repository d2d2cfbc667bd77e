//! The handler thread pool of the thread model.
//!
//! Each event holds a thread for its whole life (it waits for Kong on it), so
//! the pool grows to the number of events in flight. What matters is the
//! moment a thread frees up: Kong sends the next `HandleEvent` as soon as it
//! reads an event's final reply, often before that handler's thread is back
//! in the pool. A pool that only counts threads already waiting (tokio's
//! blocking pool does) then starts a new thread for nearly every event and
//! ratchets up to its limit. Here a handler whose code has returned *promises*
//! its thread just before it writes the final reply ([`promise_idle`]), and a
//! promised thread takes the next job as soon as it is done.
//!
//! A thread whose handler returned may *linger*: it goes on reading the
//! connection that carried the event's last reply, so that the next event
//! Kong sends there runs on it without a hand-off (`linger.rs`). A
//! lingering thread counts as idle but is called for a job only when no
//! other thread can be started: the job rings its wake-up descriptor, and
//! it gives the connection back to take the job.
//!
//! The pool never queues without bound: a job that no thread can take (every
//! thread up to `--max-handler-threads` busy, none promised) is handed back,
//! and the executor fails that event closed at once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::wake::Wake;

type Job = Box<dyn FnOnce() + Send>;

struct State {
    queue: VecDeque<Job>,
    /// Threads that will take the next queued job without delay: waiting for
    /// one, just started, or promised by a handler that has returned. Each
    /// thread is counted at most once (its `MEMBER` flag says whether it is),
    /// and uncounts itself when it takes a job or exits.
    idle: usize,
    threads: usize,
    /// Lingering threads (idle, reading a connection): their wake-ups.
    lingering: Vec<Arc<Wake>>,
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
    max_threads: usize,
    keep_alive: Duration,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// No thread can take the job now: every thread up to the limit is busy.
#[derive(Debug)]
pub struct Exhausted {
    pub max_threads: usize,
}

thread_local! {
    /// Set on pool threads: (the pool, whether this thread counts as idle).
    static MEMBER: RefCell<Option<(Arc<Inner>, bool)>> = const { RefCell::new(None) };
}

/// Called once a handler has returned (nothing of the plugin's code runs on
/// this thread any more for this event): the thread counts as free for the
/// next job from now on. No effect off pool threads.
///
/// Never call it before the handler has returned: code after
/// `kong.response.exit` (a `finally:`) may still run for a long time, and a
/// job promised to this thread would wait for it.
pub fn promise_idle() {
    MEMBER.with(|m| {
        if let Some((inner, counted)) = m.borrow_mut().as_mut() {
            if !*counted {
                *counted = true;
                inner.lock().idle += 1;
            }
        }
    });
}

impl Pool {
    pub fn new(max_threads: usize, keep_alive: Duration) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                    lingering: Vec::new(),
                }),
                ready: Condvar::new(),
                max_threads: max_threads.max(1),
                keep_alive,
            }),
        }
    }

    /// Runs `job(data)` on a pool thread, or gives `data` back when every
    /// thread up to the limit is busy: the caller answers for it instead of
    /// letting it queue without bound.
    pub fn execute<T: Send + 'static>(
        &self,
        data: T,
        job: impl FnOnce(T) + Send + 'static,
    ) -> Result<(), (T, Exhausted)> {
        let mut state = self.inner.lock();
        // Each queued job needs its own idle thread; start one when the idle
        // ones are all spoken for. Lingering threads are called only at the
        // limit: each one called gives a connection back to its I/O task,
        // where the next event would again need a thread.
        let free = state.idle - state.lingering.len();
        let spawn = state.queue.len() >= free;
        if spawn && state.threads >= self.inner.max_threads {
            let Some(wake) = state.lingering.pop() else {
                return Err((
                    data,
                    Exhausted {
                        max_threads: self.inner.max_threads,
                    },
                ));
            };
            state.queue.push_back(Box::new(move || job(data)));
            drop(state);
            wake.ring();
            return Ok(());
        }
        state.queue.push_back(Box::new(move || job(data)));
        if spawn {
            state.threads += 1;
            // The new thread is counted idle from now: it exists for this job.
            state.idle += 1;
            drop(state);
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("kong-pdk-handler".into())
                .spawn(move || work(inner));
            if let Err(e) = spawned {
                // The job stays queued for the next thread that frees up.
                log::error!("cannot start a handler thread: {e}");
                let mut state = self.inner.lock();
                state.threads -= 1;
                state.idle -= 1;
            }
        } else {
            // A waiting thread, or a promised one that takes it on its way.
            drop(state);
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    /// How long a thread stays without work before it ends.
    pub fn keep_alive(&self) -> Duration {
        self.inner.keep_alive
    }

    /// This thread's handler returned and it reads its connection for the
    /// next event instead of waiting for a job: a job meant for it rings
    /// `wake` from now on. `false` (do not linger) when jobs wait already.
    pub fn start_lingering(&self, wake: &Arc<Wake>) -> bool {
        let mut state = self.inner.lock();
        if !state.queue.is_empty() {
            return false;
        }
        state.lingering.push(Arc::clone(wake));
        true
    }

    /// Whether this thread still lingers: `false` once a job called it.
    pub fn still_lingering(&self, wake: &Arc<Wake>) -> bool {
        let state = self.inner.lock();
        state.lingering.iter().any(|w| Arc::ptr_eq(w, wake))
    }

    /// This thread stops lingering (no effect when a job called it).
    pub fn stop_lingering(&self, wake: &Arc<Wake>) {
        let mut state = self.inner.lock();
        state.lingering.retain(|w| !Arc::ptr_eq(w, wake));
    }

    /// A lingering thread read an event it is to run itself: it leaves the
    /// idle count as if it had taken a job. `false` when a job called it
    /// already: the event then goes through the queue like any other.
    pub fn claim_lingering(&self, wake: &Arc<Wake>) -> bool {
        let mut state = self.inner.lock();
        // No queued job counts on a thread that is still on the list.
        let Some(at) = state.lingering.iter().position(|w| Arc::ptr_eq(w, wake)) else {
            return false;
        };
        state.lingering.swap_remove(at);
        let uncounted = MEMBER.with(|m| match m.borrow_mut().as_mut() {
            Some((_, counted)) if *counted => {
                *counted = false;
                true
            }
            _ => false,
        });
        if uncounted {
            state.idle -= 1;
        }
        true
    }

    /// Threads alive and threads counted idle (for tests and status).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.threads, state.idle)
    }
}

fn work(inner: Arc<Inner>) {
    // Counted idle by `execute` when it started this thread.
    MEMBER.with(|m| *m.borrow_mut() = Some((Arc::clone(&inner), true)));
    loop {
        let job = {
            let mut state = inner.lock();
            MEMBER.with(|m| {
                if let Some((_, counted)) = m.borrow_mut().as_mut() {
                    if !*counted {
                        *counted = true;
                        state.idle += 1;
                    }
                }
            });
            loop {
                if let Some(job) = state.queue.pop_front() {
                    state.idle -= 1;
                    MEMBER.with(|m| {
                        if let Some((_, counted)) = m.borrow_mut().as_mut() {
                            *counted = false;
                        }
                    });
                    break Some(job);
                }
                let (next, timeout) = inner
                    .ready
                    .wait_timeout(state, inner.keep_alive)
                    .unwrap_or_else(|p| p.into_inner());
                state = next;
                if timeout.timed_out() && state.queue.is_empty() {
                    state.idle -= 1;
                    state.threads -= 1;
                    break None;
                }
            }
        };
        match job {
            Some(job) => job(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// Waits up to 5 s for the pool's counts to become `want`.
    fn counts_become(pool: &Pool, want: (usize, usize)) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.counts() != want {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn threads_start_on_demand_and_a_finished_one_takes_the_next_job() {
        let pool = Pool::new(4, Duration::from_secs(5));
        assert_eq!(pool.counts(), (0, 0), "no thread before the first job");
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        pool.execute((), move |()| {
            t.send(std::thread::current().id()).expect("send")
        })
        .expect("a thread");
        let first = rx.recv().expect("ran");
        // Back in the pool: one thread, waiting.
        assert!(counts_become(&pool, (1, 1)), "{:?}", pool.counts());
        pool.execute((), move |()| {
            tx.send(std::thread::current().id()).expect("send")
        })
        .expect("the waiting thread");
        assert_eq!(rx.recv().expect("ran"), first, "no second thread");
        assert!(counts_become(&pool, (1, 1)), "{:?}", pool.counts());
    }

    #[test]
    fn idle_threads_end_after_the_keep_alive() {
        let pool = Pool::new(4, Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let mut release = Vec::new();
        for _ in 0..2 {
            let (t, (go_tx, go_rx)) = (tx.clone(), mpsc::channel::<()>());
            pool.execute((), move |()| {
                t.send(()).expect("send");
                let _ = go_rx.recv();
            })
            .expect("a thread");
            release.push(go_tx);
        }
        rx.recv().expect("started");
        rx.recv().expect("started");
        assert_eq!(pool.counts(), (2, 0), "two jobs held at once: two threads");
        drop(release);
        // Both finish, wait 20 ms for work, and end.
        assert!(counts_become(&pool, (0, 0)), "{:?}", pool.counts());
        // The next job starts a thread again.
        pool.execute((), move |()| tx.send(()).expect("send"))
            .expect("a new thread");
        rx.recv_timeout(Duration::from_secs(5)).expect("ran");
    }

    #[test]
    fn a_limit_of_zero_still_runs_one_job() {
        let pool = Pool::new(0, Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        pool.execute((), move |()| tx.send(()).expect("send"))
            .expect("one thread at least");
        rx.recv_timeout(Duration::from_secs(5)).expect("ran");
    }

    #[test]
    fn a_promised_thread_takes_the_next_job_instead_of_a_new_thread() {
        let pool = Pool::new(8, Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let names = Arc::new(Mutex::new(Vec::new()));
        let n1 = Arc::clone(&names);
        pool.execute((), move |()| {
            n1.lock().expect("lock").push(std::thread::current().id());
            promise_idle();
            tx.send(()).expect("send");
            // Still busy finishing when the next job arrives.
            go_rx.recv().expect("go");
        })
        .expect("a thread");
        rx.recv().expect("first job ran");
        let done = Arc::new(AtomicUsize::new(0));
        let (d, n2) = (Arc::clone(&done), Arc::clone(&names));
        pool.execute((), move |()| {
            n2.lock().expect("lock").push(std::thread::current().id());
            d.fetch_add(1, Ordering::SeqCst);
        })
        .expect("the promised thread");
        go_tx.send(()).expect("go");
        while done.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let names = names.lock().expect("lock");
        assert_eq!(names[0], names[1], "the promised thread ran the second job");
        assert_eq!(pool.counts().0, 1);
    }

    #[test]
    fn busy_threads_mean_new_threads_up_to_the_limit_then_refusal() {
        let pool = Pool::new(3, Duration::from_secs(5));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let started = Arc::new(AtomicUsize::new(0));
        let mut refused = 0;
        for i in 0..5 {
            let (r, s) = (Arc::clone(&release_rx), Arc::clone(&started));
            let sent = pool.execute(i, move |_| {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = r.lock().expect("lock").recv();
            });
            if let Err((data, e)) = sent {
                assert_eq!((data, e.max_threads), (i, 3));
                refused += 1;
            }
        }
        assert_eq!(refused, 2, "no queueing beyond the threads");
        while started.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.counts(), (3, 0));
        for _ in 0..3 {
            release_tx.send(()).expect("release");
        }
    }

    /// Many jobs that hold their thread, submitted while short jobs come and
    /// go on promised threads: every holder gets a thread of its own.
    #[test]
    fn holders_each_get_a_thread_under_churn() {
        let pool = Arc::new(Pool::new(512, Duration::from_secs(5)));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let holders = Arc::new(AtomicUsize::new(0));
        let churn = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for _ in 0..4000 {
                    let _ = pool.execute((), |()| promise_idle());
                }
            })
        };
        for _ in 0..300 {
            let (r, h) = (Arc::clone(&release_rx), Arc::clone(&holders));
            pool.execute((), move |()| {
                h.fetch_add(1, Ordering::SeqCst);
                // Hold the thread until released (one release each).
                let _ = r.lock().expect("lock").recv();
            })
            .expect("below the limit");
        }
        churn.join().expect("churn");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while holders.load(Ordering::SeqCst) < 300 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(holders.load(Ordering::SeqCst), 300, "every holder started");
        for _ in 0..300 {
            release_tx.send(()).expect("release");
        }
    }

    /// Waits up to 5 s for `wake` to ring.
    fn rung(wake: &Wake) -> bool {
        let ready = crate::writer::poll(&[(wake.raw_fd(), libc::POLLIN)], 5000).expect("poll");
        !ready.is_empty()
    }

    #[test]
    fn a_lingering_thread_is_called_only_at_the_limit() {
        for max_threads in [1, 2] {
            let pool = Pool::new(max_threads, Duration::from_secs(5));
            let (lingering_tx, lingering_rx) = mpsc::channel();
            let (called_tx, called_rx) = mpsc::channel();
            let p = pool.clone();
            pool.execute((), move |()| {
                promise_idle();
                let wake = Wake::for_this_thread().expect("eventfd");
                wake.clear();
                assert!(p.start_lingering(&wake));
                lingering_tx.send(()).expect("send");
                called_tx
                    .send(rung(&wake) && !p.still_lingering(&wake))
                    .expect("send");
                p.stop_lingering(&wake);
            })
            .expect("a thread");
            lingering_rx.recv().expect("lingering");
            let (ran_tx, ran_rx) = mpsc::channel();
            pool.execute((), move |()| ran_tx.send(()).expect("send"))
                .expect("taken");
            ran_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the job ran");
            let called = called_rx.recv().expect("result");
            // Below the limit a new thread took the job and the lingering
            // one was left alone (it waited out its 5 s); at the limit the
            // lingering thread was called for it.
            assert_eq!(called, max_threads == 1, "max_threads {max_threads}");
        }
    }

    #[test]
    fn a_lingering_thread_claims_the_event_it_read() {
        let pool = Pool::new(4, Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        let p = pool.clone();
        pool.execute((), move |()| {
            promise_idle();
            let wake = Wake::for_this_thread().expect("eventfd");
            assert!(p.start_lingering(&wake));
            let idle_before = p.counts().1;
            let claimed = p.claim_lingering(&wake);
            let idle_after = p.counts().1;
            // Claimed once: no longer on the list, so a second claim fails.
            tx.send((claimed, idle_before - idle_after, p.claim_lingering(&wake)))
                .expect("send");
        })
        .expect("a thread");
        assert_eq!(rx.recv().expect("result"), (true, 1, false));
    }
}
