//! The core's logger: stderr, in the same format as the Python side's.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Sets up stderr logging once; `level` is a `log` level name. `prefix`
/// tags every line (a worker process: `worker 1`), since the workers share
/// the core's stderr, which Kong merges into its error log (docs/protocol.md §1.3).
#[pyfunction]
#[pyo3(signature = (level, prefix = None))]
pub fn init_logging(level: &str, prefix: Option<String>) -> PyResult<()> {
    use std::io::Write;
    let filter: log::LevelFilter = level
        .parse()
        .map_err(|_| PyValueError::new_err(format!("unknown log level {level:?}")))?;
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(filter)
        .target(env_logger::Target::Stderr);
    // The same layout as the Python side's (kong_pdk/logs.py), so that the
    // two interleave as one log.
    let tag = prefix.map(|p| format!(" {p}")).unwrap_or_default();
    builder.format(move |buf, record| {
        writeln!(
            buf,
            "[{} {:<5}{tag}] {}",
            buf.timestamp_seconds(),
            record.level(),
            record.args()
        )
    });
    let _ = builder.try_init();
    log::set_max_level(filter);
    Ok(())
}
