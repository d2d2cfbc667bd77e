//! What every connection thread of a ProtoBuf:1 server shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::event::PbEvent;
use super::executor::PbExecutor;
use super::ids::ShortIds;
use crate::models::threads::watchdog::Watched;
use crate::service::Service;

pub struct Shared {
    pub service: Arc<Service>,
    pub exec: Arc<PbExecutor>,
    pub ids: ShortIds,
    pub max_frame: usize,
    /// Set when the server stops: idle connections close.
    pub stop: Arc<AtomicBool>,
    /// The events whose handlers run, while `--handler-timeout` is on
    /// (`timeout.rs`).
    pub watched: Option<Arc<Watched<PbEvent>>>,
}
