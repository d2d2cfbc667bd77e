//! Supervision of the worker processes: one thread per worker spawns it,
//! waits until it serves, re-creates the instances on it, watches it, and
//! when it exits cleans up and spawns it again (with a backoff).
//!
//! The supervisor is the only writer of its worker's state, and writes it
//! through the worker's methods (workers.rs): `mark_spawned`, `mark_up`,
//! `mark_down`, `record_exit`, `record_spawn_failure`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workers::Worker;
use super::Inner;

/// How long a worker may take to start serving its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping worker gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a supervisor looks at its child.
const WATCH_PERIOD: Duration = Duration::from_millis(20);

/// One worker's life cycle, on its own thread: spawn, wait until it serves,
/// re-create the instances, watch; when it exits, clean up and spawn anew.
pub(super) fn supervise(inner: &Arc<Inner>, w: &Arc<Worker>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if inner.stop.is_set() {
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
                w.record_spawn_failure(format!("cannot start: {e}"));
                if inner.stop.pause(Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
        };
        let st = w.mark_spawned(inner.workers.new_generation(), child.id());
        let born = Instant::now();
        let status = match wait_serving(inner, w, &mut child, born) {
            Startup::Stop => return stop_child(w, &mut child),
            Startup::Exited(status) => status,
            Startup::Serving => {
                inner.runtime.block_on(inner.recreate(w, st));
                w.mark_up();
                log::info!("worker {} (pid {}) is serving", w.index, st.pid);
                match watch(inner, &mut child) {
                    None => return stop_child(w, &mut child),
                    Some(status) => status,
                }
            }
        };
        // Also closes the pooled connections to the dead process: no fd stays.
        w.mark_down();
        w.record_exit(describe_exit(status));
        log::warn!(
            "worker {} (pid {}) exited ({}); starting a new one",
            w.index,
            st.pid,
            describe_exit(status)
        );
        backoff = next_backoff(backoff, born.elapsed());
        if inner.stop.pause(backoff) {
            return;
        }
    }
}

/// The pause before the next spawn, after a process that lived `lived` and
/// the pause `backoff` before it: quick deaths back off up to 2 s; a worker
/// that served a while is replaced at once.
fn next_backoff(backoff: Duration, lived: Duration) -> Duration {
    if lived > Duration::from_secs(10) {
        Duration::from_millis(100)
    } else {
        (backoff * 2).min(Duration::from_secs(2))
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
        // The socket file appears only once the worker listens (server/socket_file.rs
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
        if inner.stop.pause(Duration::from_millis(10)) {
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
        if inner.stop.pause(WATCH_PERIOD) {
            return None;
        }
    }
}

/// SIGTERM (the worker drains, like the core, and removes its socket), then
/// SIGKILL after a grace period. The events were drained by the core before.
fn stop_child(w: &Worker, child: &mut Child) {
    w.mark_down();
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
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::models::processes::workers::{WorkerSpec, Workers};

    #[test]
    fn quick_deaths_back_off_up_to_2_s() {
        let mut backoff = Duration::from_millis(100);
        let mut seen = Vec::new();
        for _ in 0..6 {
            backoff = next_backoff(backoff, Duration::from_millis(50));
            seen.push(backoff.as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn a_worker_that_served_a_while_is_replaced_at_once() {
        let backoff = next_backoff(Duration::from_secs(2), Duration::from_secs(11));
        assert_eq!(backoff, Duration::from_millis(100));
        // Exactly 10 s is still a quick death.
        let backoff = next_backoff(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff, Duration::from_secs(2));
    }

    #[test]
    fn exits_are_described_by_code_or_signal() {
        // Raw wait statuses: the code in the high byte, or the signal.
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "killed by signal 9");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(15)),
            "killed by signal 15"
        );
    }

    #[test]
    fn stopping_a_worker_terminates_its_process_and_marks_it_down() {
        let workers = Workers::new(vec![WorkerSpec {
            argv: Vec::new(),
            socket: "/nonexistent".into(),
        }]);
        let w = &workers.all()[0];
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        w.mark_spawned(workers.new_generation(), child.id());
        w.mark_up();
        let started = Instant::now();
        stop_child(w, &mut child);
        // SIGTERM ends sleep at once: no grace period waited out.
        assert!(started.elapsed() < STOP_GRACE, "{:?}", started.elapsed());
        let status = child.try_wait().expect("wait").expect("reaped");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!w.state().up);
    }
}
