//! What every connection thread of a ProtoBuf:1 server shares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::executor::PbExecutor;
use super::ids::ShortIds;
use crate::service::Service;

pub struct Shared {
    pub service: Arc<Service>,
    pub exec: Arc<PbExecutor>,
    pub ids: ShortIds,
    pub max_frame: usize,
    /// Set when the server stops: idle connections close.
    pub stop: Arc<AtomicBool>,
}
