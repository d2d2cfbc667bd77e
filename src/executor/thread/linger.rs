//! After its handler returned, a handler's thread goes on reading the
//! connection that carried the event's `"ret"`.
//!
//! Kong hands a connection back to its keep-alive pool after each reply and
//! takes the most recent one first, so the next HandleEvent usually comes on
//! the connection that just carried `"ret"`. The thread that wrote it reads
//! that connection itself and runs the new event's handler at once: no
//! hand-off from an I/O thread to a pool thread, and no waking the
//! connection's I/O task to give the connection back. Another event's Step
//! that comes there is passed to its handler, with the connection.
//!
//! A lingering thread counts as idle in the pool (`pool.rs`): a job from
//! elsewhere rings it, and it gives the connection back, bytes intact, to
//! the connection's I/O task before it takes the job. So do a request that
//! only the I/O task serves, a closed connection, and the pool's keep-alive
//! time without a request.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use crate::events::{Filled, Lend, Served};
use crate::executor::{EventJob, Running};
use crate::wake::Wake;
use crate::writer::ConnWriter;

thread_local! {
    /// `Some` while this thread serves a request off the connection it
    /// lingers on: the event that request started, when this thread is to
    /// run it.
    static HERE: RefCell<Option<Option<(EventJob, Running)>>> = const { RefCell::new(None) };
}

/// Offers `job` to this thread: kept when the thread lingers and the job's
/// HandleEvent came on its connection (`claim` takes the thread out of the
/// pool's idle count); handed back (declined) otherwise.
pub(super) fn offer_here(
    job: EventJob,
    running: Running,
    claim: impl FnOnce(&Arc<Wake>) -> bool,
) -> Option<(EventJob, Running)> {
    HERE.with(|here| {
        let mut here = here.borrow_mut();
        match (here.as_mut(), Wake::for_this_thread()) {
            (Some(slot @ None), Some(wake)) if claim(&wake) => {
                *slot = Some((job, running));
                None
            }
            _ => Some((job, running)),
        }
    })
}

/// Reads the connection for the next event to run on this thread, for up to
/// the pool's keep-alive time; `None` when the thread goes back to the pool.
pub(super) fn linger(
    pool: &Pool,
    writer: Arc<ConnWriter>,
    mut lend: Lend,
) -> Option<(EventJob, Running)> {
    let wake = Wake::for_this_thread()?;
    if !pool.start_lingering(&wake) {
        return None;
    }
    let since = Instant::now();
    let limit = pool.keep_alive();
    let found = loop {
        wake.clear();
        if !pool.still_lingering(&wake) {
            break None; // a job called this thread: give the connection back
        }
        HERE.with(|here| *here.borrow_mut() = Some(None));
        let served = lend.serve_next(&writer);
        let job = HERE.with(|here| here.borrow_mut().take().flatten());
        lend = match served {
            Served::Kept(kept) => kept,
            // The event it started runs here (`job`) or elsewhere; either
            // way it took the connection.
            Served::Passed => break job,
            Served::GiveBack(back) => {
                drop(back);
                break None;
            }
        };
        let left = limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            break None;
        }
        let timeout = left.min(Duration::from_secs(1)).as_millis() as i32;
        if let Filled::Closed = lend.fill(&writer, &wake, timeout) {
            break None;
        }
    };
    pool.stop_lingering(&wake);
    found
}
