//! The handler thread pool of the thread model.
//!
//! Each event holds a thread for its whole life (it waits for Kong on it), so
//! the pool grows to the number of events in flight. What matters is the
//! moment a thread frees up: Kong sends the next `HandleEvent` as soon as it
//! reads an event's final reply, often before that handler's thread is back
//! in the pool. A pool that only counts threads already waiting (tokio's
//! blocking pool does) then starts a new thread for nearly every event and
//! ratchets up to its limit. Here a handler *promises* its thread just before
//! it writes the final reply ([`promise_idle`]), and a promised thread takes
//! the next job as soon as it is done.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

struct State {
    /// Jobs, each marked with whether it claimed an idle thread when queued.
    queue: VecDeque<(Job, bool)>,
    /// Threads waiting for a job, or promised to take one next, that no job
    /// has claimed yet.
    idle: usize,
    threads: usize,
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

pub struct Pool {
    inner: Arc<Inner>,
}

thread_local! {
    /// Set on pool threads: (the pool, whether this thread promised itself).
    static MEMBER: RefCell<Option<(Arc<Inner>, bool)>> = const { RefCell::new(None) };
}

/// Called by a handler about to write its event's final reply: its thread
/// counts as free for the next job from now on. No effect off pool threads.
pub fn promise_idle() {
    MEMBER.with(|m| {
        if let Some((inner, promised)) = m.borrow_mut().as_mut() {
            if !*promised {
                *promised = true;
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
                }),
                ready: Condvar::new(),
                max_threads: max_threads.max(1),
                keep_alive,
            }),
        }
    }

    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        let mut state = self.inner.lock();
        let claims = state.idle > 0;
        state.queue.push_back((Box::new(job), claims));
        if claims {
            state.idle -= 1;
            drop(state);
            self.inner.ready.notify_one();
        } else if state.threads < self.inner.max_threads {
            state.threads += 1;
            drop(state);
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("kong-pdk-handler".into())
                .spawn(move || work(inner));
            if let Err(e) = spawned {
                log::error!("cannot start a handler thread: {e}");
                self.inner.lock().threads -= 1;
            }
        } else {
            // At the limit: the job waits for the next free thread.
            log::debug!(
                "all {} handler threads are busy; event queued",
                self.inner.max_threads
            );
        }
    }
}

fn work(inner: Arc<Inner>) {
    MEMBER.with(|m| *m.borrow_mut() = Some((Arc::clone(&inner), false)));
    loop {
        let job = {
            let mut state = inner.lock();
            // A promised thread already counts as idle; others register now.
            let promised = MEMBER.with(|m| m.borrow().as_ref().is_some_and(|(_, p)| *p));
            if !promised {
                state.idle += 1;
            }
            MEMBER.with(|m| {
                if let Some((_, p)) = m.borrow_mut().as_mut() {
                    *p = false;
                }
            });
            loop {
                if let Some((job, claimed)) = state.queue.pop_front() {
                    if !claimed {
                        // Taken by us, not by the thread started for it: our
                        // own idle mark is used up (that thread will idle).
                        state.idle = state.idle.saturating_sub(1);
                    }
                    break Some(job);
                }
                let (next, timeout) = inner
                    .ready
                    .wait_timeout(state, inner.keep_alive)
                    .unwrap_or_else(|p| p.into_inner());
                state = next;
                if timeout.timed_out() && state.queue.is_empty() {
                    state.idle = state.idle.saturating_sub(1);
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

    #[test]
    fn a_promised_thread_takes_the_next_job_instead_of_a_new_thread() {
        let pool = Pool::new(8, Duration::from_secs(5));
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let names = Arc::new(Mutex::new(Vec::new()));
        let n1 = Arc::clone(&names);
        pool.execute(move || {
            n1.lock().expect("lock").push(std::thread::current().id());
            promise_idle();
            tx.send(()).expect("send");
            // Still busy finishing when the next job arrives.
            go_rx.recv().expect("go");
        });
        rx.recv().expect("first job ran");
        let done = Arc::new(AtomicUsize::new(0));
        let (d, n2) = (Arc::clone(&done), Arc::clone(&names));
        pool.execute(move || {
            n2.lock().expect("lock").push(std::thread::current().id());
            d.fetch_add(1, Ordering::SeqCst);
        });
        go_tx.send(()).expect("go");
        while done.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let names = names.lock().expect("lock");
        assert_eq!(names[0], names[1], "the promised thread ran the second job");
        assert_eq!(pool.inner.lock().threads, 1);
    }

    #[test]
    fn busy_threads_mean_new_threads_up_to_the_limit() {
        let pool = Pool::new(3, Duration::from_secs(5));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let started = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let (r, s) = (Arc::clone(&release_rx), Arc::clone(&started));
            pool.execute(move || {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = r.lock().expect("lock").recv();
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(started.load(Ordering::SeqCst), 3);
        assert_eq!(pool.inner.lock().threads, 3);
        for _ in 0..5 {
            release_tx.send(()).expect("release");
        }
        while started.load(Ordering::SeqCst) < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
