//! The looped models' stall watchdog: a thread that sees the event loop stop
//! turning and says which handler holds it.
//!
//! Every event of a looped server runs on one loop, so a handler that does
//! not yield (`time.sleep` in an `async def` phase, a CPU loop under `-g`)
//! holds up all of them. The runner calls [`Heartbeat::beat`] from a loop
//! timer every [`Heartbeat::period`] (nothing is added to an event's path);
//! one thread reads the last beat, without the GIL, at the same period. When
//! the loop has not beaten for the threshold it takes the GIL (a thread in
//! `time.sleep` has released it; a CPU loop hands it over at the
//! interpreter's switch interval, 5 ms), reads the loop thread's current
//! frame (`kong_pdk.runners.blocking_handler`) and logs, once per stall, the
//! event, its plugin and phase, and the stack of the blocking code.
//!
//! Nothing is sent to Kong from here: a handler past `--handler-timeout` is
//! failed closed on the loop's own thread once it yields (`event.rs`,
//! `time_out`), as the loop cannot be entered while it is blocked.
//!
//! Both wires' looped servers start one (MessagePack:1's here, ProtoBuf:1's
//! in `protobuf/looped/`); each says how its event handles are named
//! ([`NameHandle`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Names the event behind a handle the runner's driver holds
/// (`event 12: my-plugin access handler`); `None` for another object.
pub type NameHandle = fn(&Bound<'_, PyAny>) -> Option<String>;

/// How long the loop may go without turning before the warning: the stall
/// threshold, or `--handler-timeout` when shorter (the event fails closed
/// past it).
pub fn stall_threshold(handler_timeout: Option<Duration>) -> Duration {
    handler_timeout.map_or(crate::defaults::LOOP_STALL, |t| {
        t.min(crate::defaults::LOOP_STALL)
    })
}

/// The loop's last beat, as the watchdog reads it.
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds from `base` to the last beat.
    last: AtomicU64,
    /// The loop thread's ident (`threading.get_ident()` on it); 0 until the
    /// first beat, and the watchdog waits for one: a loop still starting up
    /// is not a stall.
    thread: AtomicU64,
    stopped: AtomicBool,
    /// How long the loop may go without turning before the warning.
    threshold: Duration,
}

impl Heartbeat {
    pub fn new(threshold: Duration) -> Self {
        Heartbeat {
            base: Instant::now(),
            last: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            threshold,
        }
    }

    /// Seconds between two beats (and two looks of the watchdog): a fifth of
    /// the threshold, so a stall is seen within 20 % of it.
    pub fn period(&self) -> Duration {
        (self.threshold / 5).max(Duration::from_millis(10))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The loop turned: called from its timer, on its thread.
    pub fn beat(&self) {
        // SAFETY: PyThread_get_thread_ident has no preconditions (it reads
        // the calling thread's id; no GIL, no Python state needed).
        let ident = unsafe { pyo3::ffi::PyThread_get_thread_ident() };
        // c_ulong: u64 here, u32 on other targets.
        #[allow(clippy::useless_conversion)]
        self.thread.store(u64::from(ident), Ordering::Relaxed);
        self.last.store(self.now_ms(), Ordering::Release);
    }

    /// The server stopped: the loop stops beating, the watchdog ends.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}

/// Starts the watchdog thread; it ends when the heartbeat is stopped or gone.
pub fn watch(
    heartbeat: &Arc<Heartbeat>,
    handler_timeout: Option<Duration>,
    name: NameHandle,
) -> std::io::Result<()> {
    let heartbeat = Arc::downgrade(heartbeat);
    thread::Builder::new()
        .name("kong-pdk-stall".into())
        .spawn(move || run(&heartbeat, handler_timeout, name))
        .map(drop)
}

fn run(heartbeat: &Weak<Heartbeat>, handler_timeout: Option<Duration>, name: NameHandle) {
    let mut stalls = Stalls::default();
    loop {
        let Some(hb) = heartbeat.upgrade() else {
            return;
        };
        if hb.stopped.load(Ordering::Acquire) {
            return;
        }
        let period = hb.period();
        let thread = hb.thread.load(Ordering::Relaxed);
        let last = hb.last.load(Ordering::Acquire);
        match stalls.look(thread, last, hb.now_ms(), hb.threshold) {
            Seen::Stall { last, blocked } => {
                report(&hb, thread, last, blocked, handler_timeout, name)
            }
            Seen::Turned { gap } => log::info!(
                "the event loop turned again after {:.1} s",
                gap.saturating_sub(period).as_secs_f64()
            ),
            Seen::Nothing => {}
        }
        drop(hb);
        thread::sleep(period);
    }
}

/// What one look at the heartbeat calls for.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    /// A stall not reported yet: no beat since `last` for `blocked`.
    Stall {
        last: u64,
        blocked: Duration,
    },
    /// The loop of the stall last reported turned again, `gap` after the
    /// beat it stalled at.
    Turned {
        gap: Duration,
    },
}

/// The watchdog's memory between looks: the beat of the stall last
/// reported, so that each stall is reported once.
#[derive(Default)]
struct Stalls {
    reported: Option<u64>,
}

impl Stalls {
    /// One look: the loop thread's ident (0 before the first beat), the last
    /// beat and now (milliseconds from the heartbeat's base).
    fn look(&mut self, thread: u64, last: u64, now: u64, threshold: Duration) -> Seen {
        let blocked = Duration::from_millis(now.saturating_sub(last));
        if thread != 0 && blocked >= threshold {
            if self.reported != Some(last) {
                self.reported = Some(last);
                return Seen::Stall { last, blocked };
            }
        } else if let Some(stalled_at) = self.reported.take() {
            if last != stalled_at {
                let gap = Duration::from_millis(last.saturating_sub(stalled_at));
                return Seen::Turned { gap };
            }
        }
        Seen::Nothing
    }
}

/// Logs one stall: which handler, where, and its stack.
fn report(
    hb: &Heartbeat,
    thread: u64,
    last: u64,
    blocked: Duration,
    handler_timeout: Option<Duration>,
    name: NameHandle,
) {
    let told = Python::try_attach(|py| {
        // The GIL may have come only once the loop moved on.
        if hb.last.load(Ordering::Acquire) != last {
            return Ok(None);
        }
        let found = py
            .import("kong_pdk.runners")?
            .getattr("blocking_handler")?
            .call1((thread,))?;
        let (handle, at, stack): (Option<Bound<'_, PyAny>>, String, String) = found.extract()?;
        let who = handle
            .as_ref()
            .and_then(name)
            .unwrap_or_else(|| "code outside any handler".to_string());
        PyResult::Ok(Some((who, at, stack)))
    });
    let when = match handler_timeout {
        Some(limit) => format!(
            "; past --handler-timeout ({:.1} s) its event fails closed once it yields",
            limit.as_secs_f64()
        ),
        None => String::new(),
    };
    match told {
        Some(Ok(Some((who, at, stack)))) => log::warn!(
            "{who} blocked the event loop for {:.1} s: every other event waits until it yields \
             (keep blocking code out of async def, -g and --model greenlets handlers; \
             --model threads runs plain def handlers on threads){when}; it is at {at}\n{stack}",
            blocked.as_secs_f64()
        ),
        Some(Ok(None)) => log::warn!(
            "something blocked the event loop for {:.1} s{when}; it turned again before its stack could be read",
            blocked.as_secs_f64()
        ),
        Some(Err(e)) => log::warn!(
            "a handler blocked the event loop for {:.1} s{when}; its stack could not be read: {e}",
            blocked.as_secs_f64()
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: Duration = Duration::from_millis(500);
    const LOOP: u64 = 42;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_loop_that_beats_in_time_is_no_stall() {
        let mut stalls = Stalls::default();
        for now in [100, 400, 599] {
            assert_eq!(stalls.look(LOOP, 100, now, THRESHOLD), Seen::Nothing);
        }
    }

    #[test]
    fn a_loop_still_starting_up_is_no_stall() {
        // No beat yet (thread 0): however long it takes.
        let mut stalls = Stalls::default();
        assert_eq!(stalls.look(0, 0, 60_000, THRESHOLD), Seen::Nothing);
    }

    #[test]
    fn a_stall_is_reported_once_and_its_end_once() {
        let mut stalls = Stalls::default();
        assert_eq!(
            stalls.look(LOOP, 100, 600, THRESHOLD),
            Seen::Stall {
                last: 100,
                blocked: ms(500)
            }
        );
        // Still the same stall: said once.
        assert_eq!(stalls.look(LOOP, 100, 700, THRESHOLD), Seen::Nothing);
        assert_eq!(stalls.look(LOOP, 100, 5_000, THRESHOLD), Seen::Nothing);
        // The loop turned at 5100.
        assert_eq!(
            stalls.look(LOOP, 5_100, 5_150, THRESHOLD),
            Seen::Turned { gap: ms(5_000) }
        );
        assert_eq!(stalls.look(LOOP, 5_200, 5_250, THRESHOLD), Seen::Nothing);
    }

    #[test]
    fn a_new_stall_after_a_beat_is_reported_again() {
        let mut stalls = Stalls::default();
        assert!(matches!(
            stalls.look(LOOP, 100, 700, THRESHOLD),
            Seen::Stall { last: 100, .. }
        ));
        // One beat, then stuck again before the watchdog looked in between:
        // a new stall, reported.
        assert_eq!(
            stalls.look(LOOP, 800, 1_400, THRESHOLD),
            Seen::Stall {
                last: 800,
                blocked: ms(600)
            }
        );
    }

    #[test]
    fn a_shorter_handler_timeout_brings_the_warning_forward() {
        assert_eq!(stall_threshold(None), crate::defaults::LOOP_STALL);
        assert_eq!(stall_threshold(Some(ms(200))), ms(200));
        assert_eq!(
            stall_threshold(Some(Duration::from_secs(60))),
            crate::defaults::LOOP_STALL
        );
    }

    #[test]
    fn the_period_is_a_fifth_of_the_threshold_at_least_10_ms() {
        assert_eq!(Heartbeat::new(ms(500)).period(), ms(100));
        assert_eq!(Heartbeat::new(ms(20)).period(), ms(10));
    }

    #[test]
    fn the_watchdog_ends_when_the_heartbeat_stops_or_goes() {
        for stop in [true, false] {
            let hb = Arc::new(Heartbeat::new(ms(50)));
            let weak = Arc::downgrade(&hb);
            let (tx, rx) = std::sync::mpsc::channel();
            thread::spawn(move || {
                run(&weak, None, |_| None);
                let _ = tx.send(());
            });
            if stop {
                hb.stop();
            } else {
                drop(hb);
            }
            // No beat yet: nothing to report, so no Python is needed.
            rx.recv_timeout(Duration::from_secs(5))
                .expect("the watchdog ended");
        }
    }
}
