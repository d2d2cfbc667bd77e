//! `kong_pdk._core`: the native plugin server behind the `kong_pdk` package.
//!
//! Data flow (docs/architecture.md, "The path of one event"): `server` accepts connections, `connection` frames
//! bytes with `wire` and parses requests with `rpc` into typed calls,
//! `dispatch` serves each (`Service::serve`, the one entry for every caller),
//! `service` runs the `plugin.*` methods against the `instances` and `events`
//! registries, and an `executor` runs the Python handler, whose PDK calls go
//! through `pdk`.
//! When every handler runs on a Python event loop (all `async def`, or
//! gevent), `looped` replaces `connection` and the executors: the loop's own
//! thread serves the socket and runs the handlers. With `--protocol
//! protobuf`, `protobuf` replaces `connection` and the executors: Kong's other
//! wire, each event run on its connection's thread.
//! Only `convert`, `pdk`, `executor`, `looped`, `protobuf`, `plugin_entry`
//! and `server` touch Python.

mod backlog;
mod connection;
mod convert;
pub mod defaults;
mod dispatch;
mod events;
mod executor;
mod handover;
mod ids;
mod instances;
mod models;
mod pdk;
mod pdk_table;
mod phase;
mod plugin_entry;
mod protobuf;
pub mod rpc;
mod rpc_error;
mod server;
mod service;
#[cfg(test)]
mod test_support;
mod wake;
pub mod wire;
mod writer;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use crate::models::chunk_cache::stack_chunks_cached;
    #[pymodule_export]
    use crate::pdk::PdkProxy;
    #[pymodule_export]
    use crate::plugin_entry::PluginEntry;
    #[pymodule_export]
    use crate::server::{init_logging, PluginServer};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "PROTOBUF_SCHEMA",
            pyo3::types::PyBytes::new(m.py(), crate::protobuf::SCHEMA),
        )?;
        m.add("DEFAULTS", crate::defaults::as_dict(m.py())?)
    }

    use pyo3::prelude::*;
}
