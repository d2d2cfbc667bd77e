//! The default of every server setting, in one table.
//!
//! The core's constructor (`server/mod.rs`) takes its defaults from here, and the
//! command line (`cli.py`) and the worker processes (`serve.py`) read the same
//! values as `kong_pdk._core.DEFAULTS`; a test checks that the type stubs
//! (`_core.pyi`) spell the same numbers.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Seconds an event may wait for Kong's next Step before it is abandoned.
pub const EVENT_TIMEOUT: f64 = 60.0;
/// Seconds an idle instance is kept (Kong never closes instances).
pub const INSTANCE_TTL: f64 = 600.0;
/// Seconds events in flight get to finish on SIGTERM.
pub const DRAIN_TIMEOUT: f64 = 10.0;
/// Largest message accepted, in bytes: far above any PDK payload Kong sends
/// (bodies are capped by nginx's client_body_buffer_size), small enough that
/// a broken peer cannot make us buffer without bound.
pub const MAX_FRAME: usize = 64 << 20;
/// The listen backlog of the socket.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Threads serving the socket (handlers run on threads of their own).
pub const IO_THREADS: usize = 1;
/// Most handlers running (or waiting on Kong) at once in the thread model.
pub const MAX_HANDLER_THREADS: usize = 512;
/// Seconds a handler may run without answering Kong; 0 is off.
pub const HANDLER_TIMEOUT: f64 = 0.0;
/// How long the event loop of the looped models (all-`async def`, `-g`) may
/// go without turning before the stall watchdog logs the handler that holds
/// it (`models/looped/watchdog.rs`); no flag: a loop held this long is a plugin bug
/// to fix, not a setting to tune. Shorter with a shorter `--handler-timeout`.
pub const LOOP_STALL: std::time::Duration = std::time::Duration::from_millis(500);
/// Seconds worker processes (`-m`) get to start serving.
pub const WORKER_STARTUP_TIMEOUT: f64 = 60.0;

/// The table as a dict, keyed by the constructor's parameter names.
pub fn as_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("event_timeout", EVENT_TIMEOUT)?;
    d.set_item("instance_ttl", INSTANCE_TTL)?;
    d.set_item("drain_timeout", DRAIN_TIMEOUT)?;
    d.set_item("max_frame", MAX_FRAME)?;
    d.set_item("listen_backlog", LISTEN_BACKLOG)?;
    d.set_item("async_threads", IO_THREADS)?;
    d.set_item("max_handler_threads", MAX_HANDLER_THREADS)?;
    d.set_item("handler_timeout", HANDLER_TIMEOUT)?;
    d.set_item("worker_startup_timeout", WORKER_STARTUP_TIMEOUT)?;
    Ok(d)
}
