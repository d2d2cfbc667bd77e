//! Where one event stands: the one state machine every execution model's
//! event uses (the thread model's and the bridged loop's `pdk::EventCtx`,
//! the looped model's `looped::LoopedEvent`).
//!
//! An event starts [`Stage::Running`] and leaves it exactly once, to the
//! stage that says how it ended; only the first way out counts, so a
//! handler that returns while the watchdog takes its event over, or that
//! calls `kong.response.exit` on an abandoned event, cannot send Kong a
//! second ending. The cell is lock-free: the handler's thread, the socket
//! task that abandons an event and the watchdog race on it.

use std::sync::atomic::{AtomicU8, Ordering};

/// One event's stage.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    /// The handler runs; its outputs reach Kong.
    Running = 0,
    /// A terminal call (`kong.response.exit`/`error`) sent the response.
    Exited = 1,
    /// Kong stopped answering (its deadline, AbandonEvent, shutdown, a lost
    /// connection) or the event was taken from a handler that overran.
    Abandoned = 2,
    /// The handler returned or raised, and its ending was sent or is owed.
    Finished = 3,
}

impl Stage {
    /// Ends a running event as `to`, for a stage kept under the event's own
    /// lock (the looped model); false when it had already ended.
    pub fn leave(&mut self, to: Stage) -> bool {
        let running = *self == Stage::Running;
        if running {
            *self = to;
        }
        running
    }

    fn from_u8(value: u8) -> Stage {
        match value {
            0 => Stage::Running,
            1 => Stage::Exited,
            2 => Stage::Abandoned,
            _ => Stage::Finished,
        }
    }
}

/// An event's [`Stage`], shared by everything that may end it.
pub struct StageCell(AtomicU8);

impl Default for StageCell {
    fn default() -> Self {
        StageCell(AtomicU8::new(Stage::Running as u8))
    }
}

impl StageCell {
    pub fn get(&self) -> Stage {
        Stage::from_u8(self.0.load(Ordering::Acquire))
    }

    pub fn is_running(&self) -> bool {
        self.get() == Stage::Running
    }

    /// Ends a running event as `to`; false when it had already ended (the
    /// caller then sends nothing).
    pub fn leave(&self, to: Stage) -> bool {
        self.0
            .compare_exchange(
                Stage::Running as u8,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Marks the event abandoned whatever its stage: the event was taken
    /// from its handler, whose later calls must say so.
    pub fn take_from_handler(&self) {
        self.0.store(Stage::Abandoned as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_ends_once_and_the_first_ending_counts() {
        let cell = StageCell::default();
        assert!(cell.is_running());
        assert!(cell.leave(Stage::Exited));
        assert!(!cell.leave(Stage::Finished));
        assert!(!cell.leave(Stage::Abandoned));
        assert_eq!(cell.get(), Stage::Exited);
    }

    #[test]
    fn an_event_taken_from_its_handler_is_abandoned_whatever_it_was() {
        for first in [Stage::Running, Stage::Finished] {
            let cell = StageCell::default();
            if first != Stage::Running {
                assert!(cell.leave(first));
            }
            cell.take_from_handler();
            assert_eq!(cell.get(), Stage::Abandoned);
            assert!(!cell.leave(Stage::Finished));
        }
    }

    #[test]
    fn a_stage_under_a_lock_follows_the_same_rule() {
        let mut stage = Stage::Running;
        assert!(stage.leave(Stage::Finished));
        assert!(!stage.leave(Stage::Exited));
        assert_eq!(stage, Stage::Finished);
    }

    #[test]
    fn every_stage_reads_back_as_itself() {
        for stage in [
            Stage::Running,
            Stage::Exited,
            Stage::Abandoned,
            Stage::Finished,
        ] {
            assert_eq!(Stage::from_u8(stage as u8), stage);
        }
    }
}
