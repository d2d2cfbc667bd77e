//! Where one looped event stands, shared by its `kong` object, its handle
//! and the connection's pending call.

use std::sync::atomic::{AtomicU8, Ordering};

pub const RUNNING: u8 = 0;
pub const EXITED: u8 = 1;
/// The connection failed or Kong stopped answering.
pub const BROKEN: u8 = 2;
pub const OVER: u8 = 3;

#[derive(Default)]
pub struct EventState(AtomicU8);

impl EventState {
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    pub fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }

    /// Moves from RUNNING to `state`; false when the event was elsewhere.
    pub fn leave_running(&self, state: u8) -> bool {
        self.0
            .compare_exchange(RUNNING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
