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

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use crate::events::{Filled, Here, Lend, Served};
use crate::executor::EventJob;
use crate::wake::Wake;
use crate::writer::ConnWriter;

/// An event whose HandleEvent a lingering thread read.
pub(super) enum Found {
    /// The thread left the pool's idle count for it: run it here.
    Here(EventJob),
    /// The pool called the thread for a job meanwhile: run it elsewhere.
    Elsewhere(EventJob),
}

/// Reads the connection for the next event to run on this thread, for up to
/// the pool's keep-alive time; `None` when the thread goes back to the pool.
pub(super) fn linger(pool: &Pool, writer: Arc<ConnWriter>, mut lend: Lend) -> Option<Found> {
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
        let mut here: Option<EventJob> = None;
        lend = match lend.serve_next(&writer, Here::slot(&mut here)) {
            Served::Kept(kept) => kept,
            // The event it started is for this thread (`claim` takes the
            // thread out of the pool's idle count) or ran elsewhere, or the
            // Step it resumed took the connection.
            Served::Passed => match here {
                Some(job) if pool.claim_lingering(&wake) => break Some(Found::Here(job)),
                Some(job) => break Some(Found::Elsewhere(job)),
                None => break None,
            },
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
