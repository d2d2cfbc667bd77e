//! Replies written for a peer that has not read them yet: how much one
//! connection may hold, and how much all of them together may.
//!
//! Kong reads each reply before it sends its next request on a connection
//! (docs/protocol.md §2), so a connection that serves Kong never holds more
//! than one reply; both models also stop reading a peer's requests while it
//! has a reply waiting (`connection.rs`, `models/looped/conns.rs`). What is left to
//! bound is a peer that does not play by that rule: events it started reply
//! later, whether it reads or not. So the reply at the head of a
//! connection's backlog may wait whatever its size; behind it a connection
//! may hold [`EXTRA_PER_CONNECTION`] bytes; and every connection's waiting
//! bytes share one process-wide budget ([`budget`]). A connection over
//! either bound is cut off, which costs that peer only.
//!
//! The thread model's `ConnWriter` (`writer.rs`) and the looped model's
//! connections (`models/looped/conns.rs`) keep their bytes each in their own buffer
//! and count them here, so the bounds hold in every model.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of replies waiting for their peers, over every connection.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// What a connection may hold beyond the one reply that may always wait.
pub const EXTRA_PER_CONNECTION: usize = 1 << 20;

/// What all connections together may hold, for a frame limit of `max_frame`:
/// room for several of the largest replies, never less than 256 MiB.
pub fn budget(max_frame: usize) -> usize {
    max_frame.saturating_mul(4).max(256 << 20)
}

/// Why a connection was cut off.
#[derive(Debug, PartialEq, Eq)]
pub enum Overflow {
    /// This peer left more than one reply plus the allowance unread.
    Connection { waiting: usize },
    /// All peers together left more than the budget unread.
    Process { budget: usize },
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::Connection { waiting } => write!(
                f,
                "the peer left {waiting} bytes of replies unread (one reply and \
                 {EXTRA_PER_CONNECTION} bytes more may wait)"
            ),
            Overflow::Process { budget } => write!(
                f,
                "server busy: peers leave more than {budget} bytes of replies unread"
            ),
        }
    }
}

/// One connection's share of [`WAITING`]; gives it back when dropped.
pub struct Backlog {
    /// What this connection counts in [`WAITING`].
    accounted: usize,
    /// The size of the reply that started the current backlog.
    head: usize,
    budget: usize,
}

impl Backlog {
    pub fn new(max_frame: usize) -> Self {
        Backlog {
            accounted: 0,
            head: 0,
            budget: budget(max_frame),
        }
    }

    /// `adding` more bytes are to wait behind the `waiting` ones already
    /// there: allowed, or why the connection must be cut off.
    pub fn admit(&mut self, waiting: usize, adding: usize) -> Result<(), Overflow> {
        if waiting == 0 {
            self.head = adding;
        }
        verdict(
            waiting,
            adding,
            self.head,
            WAITING.load(Ordering::Relaxed),
            self.budget,
        )
    }

    /// Brings the process-wide count up to date: `waiting` bytes now wait
    /// on this connection.
    pub fn set(&mut self, waiting: usize) {
        if waiting >= self.accounted {
            WAITING.fetch_add(waiting - self.accounted, Ordering::Relaxed);
        } else {
            WAITING.fetch_sub(self.accounted - waiting, Ordering::Relaxed);
        }
        self.accounted = waiting;
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// [`Backlog::admit`] for a connection whose backlog began with a reply of
/// `head` bytes, in a process where `everyone` bytes wait already.
fn verdict(
    waiting: usize,
    adding: usize,
    head: usize,
    everyone: usize,
    budget: usize,
) -> Result<(), Overflow> {
    let after = waiting.saturating_add(adding);
    if after > head.saturating_add(EXTRA_PER_CONNECTION) {
        return Err(Overflow::Connection { waiting: after });
    }
    if everyone.saturating_add(adding) > budget {
        return Err(Overflow::Process { budget });
    }
    Ok(())
}

/// Bytes of replies waiting for their peers now, over every connection.
#[cfg(test)]
fn waiting() -> usize {
    WAITING.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_head_reply_of_any_size_may_wait_then_the_allowance() {
        let budget = 256 * MIB;
        assert_eq!(
            verdict(0, 200 * MIB, 200 * MIB, 0, budget),
            Ok(()),
            "a big first reply"
        );
        assert_eq!(verdict(100, 10, 100, 0, budget), Ok(()));
        assert_eq!(
            verdict(30 * MIB, MIB, 30 * MIB, 0, budget),
            Ok(()),
            "the head and the allowance"
        );
        assert_eq!(
            verdict(30 * MIB, MIB + 1, 30 * MIB, 0, budget),
            Err(Overflow::Connection {
                waiting: 31 * MIB + 1
            })
        );
        assert_eq!(
            verdict(MIB, MIB, 100, 0, budget),
            Err(Overflow::Connection { waiting: 2 * MIB })
        );
    }

    #[test]
    fn all_connections_share_one_budget() {
        let budget = 256 * MIB;
        assert_eq!(verdict(0, 100, 100, budget - 200, budget), Ok(()));
        assert_eq!(
            verdict(0, 100, 100, budget - 50, budget),
            Err(Overflow::Process { budget }),
            "even a first reply once the process is over its budget"
        );
    }

    #[test]
    fn admit_remembers_the_head_of_each_backlog() {
        let mut b = Backlog::new(1024);
        assert_eq!(b.admit(0, 10 * MIB), Ok(()));
        assert_eq!(b.admit(10 * MIB, MIB), Ok(()));
        assert!(b.admit(11 * MIB, 1).is_err());
        assert_eq!(b.admit(0, 100), Ok(()), "a new backlog, a new head");
        assert!(b.admit(100, MIB + 1).is_err());
    }

    #[test]
    fn a_backlog_counts_in_the_process_total_until_dropped() {
        // Other tests run beside this one and hold a few MiB at most; this
        // count stays well under the budget those tests write against.
        let big = 100 * MIB;
        let mut b = Backlog::new(1024);
        b.set(big);
        assert!(waiting() >= big);
        b.set(big / 2);
        assert!(waiting() < big && waiting() >= big / 2);
        drop(b);
        assert!(waiting() < big / 2);
    }
}
