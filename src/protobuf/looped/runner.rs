//! The runner's loop as the looped ProtoBuf:1 server uses it: its tokens
//! and the descriptors it watches for writability.

use std::os::fd::RawFd;

use pyo3::prelude::*;

use crate::models::looped::tokens::Tokens;

pub struct Runner {
    pub runner: Py<PyAny>,
    pub tokens: Tokens,
}

impl Runner {
    /// Flushes connection `conn` when `fd` becomes writable.
    pub fn watch_writable(&self, py: Python<'_>, fd: RawFd, conn: u64) {
        if let Err(e) = self.runner.call_method1(py, "watch_writable", (fd, conn)) {
            log::error!("watching a connection for writing failed: {e}");
        }
    }

    pub fn unwatch_writable(&self, py: Python<'_>, fd: RawFd) {
        let _ = self.runner.call_method1(py, "unwatch_writable", (fd,));
    }

    /// `fd` is about to close: the runner stops watching it.
    pub fn forget(&self, py: Python<'_>, fd: RawFd) {
        let _ = self.runner.call_method1(py, "forget", (fd,));
    }
}
