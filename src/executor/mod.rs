//! How a phase handler runs.
//!
//! The RPC side (`service.rs`) knows nothing of Python: it asks an
//! [`Executor`] to create a plugin object for a config and to run one event,
//! and then only reads the event's [`Out`](crate::events::Out) channel. Each
//! execution model is one implementation of this seam; the PDK proxy
//! (`pdk.rs`) and the event protocol (`events.rs`) are shared by all.
//!
//! The GIL rule: an executor holds the GIL only while Python code runs. A PDK
//! call waits for Kong detached (see `pdk.rs`).
//!
//! Every event ends in exactly one of: `Done` ("ret"), a terminal call, or the
//! channel closing (the handler's side dropped); the RPC side treats a closed
//! channel as "ret", so even a crashed handler cannot leave Kong waiting.

pub mod thread;

use std::sync::Arc;

use pyo3::prelude::*;
use rmpv::Value;
use tokio::sync::mpsc;

use crate::events::Out;
use crate::instances::InFlight;

/// The live plugin object of one instance.
pub type PluginHandle = Py<PyAny>;

/// The phases an external plugin can implement (protocol.md §1.4, §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Certificate,
    Rewrite,
    Access,
    Response,
    Preread,
    Log,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Certificate,
        Phase::Rewrite,
        Phase::Access,
        Phase::Response,
        Phase::Preread,
        Phase::Log,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Certificate => "certificate",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Response => "response",
            Phase::Preread => "preread",
            Phase::Log => "log",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether Kong can still send a response when the handler fails: a
    /// failing handler then ends the request with a 500, like a Lua plugin.
    pub fn can_respond(self) -> bool {
        matches!(self, Phase::Rewrite | Phase::Access)
    }
}

/// One event to run.
pub struct EventJob {
    pub event_id: u64,
    pub phase: Phase,
    /// Keeps the instance alive and marked busy until the handler returns.
    pub instance: InFlight<PluginHandle>,
    pub outputs: mpsc::UnboundedSender<Out>,
}

pub trait Executor: Send + Sync {
    /// Creates the plugin object for one config. Blocking: the caller runs it
    /// off the async threads.
    fn start_instance(&self, config: &Value) -> Result<PluginHandle, String>;

    /// Starts one event; its outputs arrive on `job.outputs`.
    fn run_event(&self, job: EventJob);

    /// Handlers currently running (for status and draining).
    fn running(&self) -> usize;
}

pub type SharedExecutor = Arc<dyn Executor>;
