//! The execution model: where the handlers run, chosen once.
//!
//! The Python side decides it from the command line (`-g`, `-m`, `--model`)
//! and the plugins (`async def` phases; whether a plugin's code may block,
//! `kong_pdk/blocking.py`) and hands it to the core by name; the core
//! builds that model and nothing else. Each name maps to one way of serving
//! the socket (tokio I/O threads, or the runner's loop) and one place where
//! handlers run.
//!
//! Each model has its folder here, with the same rooms where it has them:
//! `mod.rs` its executor (or, for the looped models, the core the runner's
//! loop drives) and `watchdog.rs` what catches a handler that does not come
//! back. `threads/` plain `def` handlers on a thread pool (the model of
//! plugins that may block), `looped/` every handler on one loop that also
//! serves the socket (`async def`, `-g`, and greenlets for plain `def`
//! handlers that never block), `processes/` worker processes (`-m`), and
//! `mixed.rs` threads with the `async def` phases of a plugin that mixes
//! both bridged to an asyncio loop. What every model shares, one event's
//! state and its failing closed, is in `events/`; `chunk_cache.rs` keeps
//! the interpreter's stack chunks of handlers that start on an empty stack
//! (a pool thread, a greenlet) for reuse, in every model.

pub mod chunk_cache;
pub mod looped;
pub mod mixed;
pub mod processes;
pub mod threads;

use std::fmt;

/// Where the handlers run (docs/execution-models.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Plain `def` handlers on the thread pool; tokio serves the socket.
    Threads,
    /// Threads, and the `async def` phases of plugins that mix both on the
    /// runner's asyncio loop, bridged (`models/mixed.rs`).
    Mixed,
    /// Every handler `async def`, on the runner's asyncio loop, which
    /// serves the socket (`models/looped/`).
    Asyncio,
    /// `-g`: every handler in a greenlet on gevent's hub, which serves the
    /// socket (`models/looped/`).
    Gevent,
    /// Plain `def` handlers of plugins that never block, as greenlets on
    /// the runner's poll loop, which serves the socket (`models/looped/`).
    Greenlets,
    /// `-m`: worker processes run the handlers; this process relays.
    Processes,
}

/// A model name the core does not know.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownModel(pub String);

impl fmt::Display for UnknownModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown execution model '{}': one of {}",
            self.0,
            Model::ALL.map(Model::name).join(", ")
        )
    }
}

impl Model {
    pub const ALL: [Model; 6] = [
        Model::Threads,
        Model::Mixed,
        Model::Asyncio,
        Model::Gevent,
        Model::Greenlets,
        Model::Processes,
    ];

    pub fn parse(name: &str) -> Result<Model, UnknownModel> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownModel(name.to_string()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Threads => "threads",
            Model::Mixed => "mixed",
            Model::Asyncio => "asyncio",
            Model::Gevent => "gevent",
            Model::Greenlets => "greenlets",
            Model::Processes => "processes",
        }
    }

    /// Whether the runner's loop serves the socket and runs every handler.
    pub fn looped(self) -> bool {
        matches!(self, Model::Asyncio | Model::Gevent | Model::Greenlets)
    }

    /// Whether the model needs a runner (a Python event loop).
    pub fn needs_runner(self) -> bool {
        self.looped() || self == Model::Mixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_model() {
        for model in Model::ALL {
            assert_eq!(Model::parse(model.name()), Ok(model));
        }
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_known_ones() {
        let err = Model::parse("fibers").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unknown execution model 'fibers': one of threads, mixed, asyncio, gevent, greenlets, processes"
            )
        );
    }

    #[test]
    fn only_the_loop_models_serve_the_socket_from_the_runner() {
        let looped: Vec<_> = Model::ALL.into_iter().filter(|m| m.looped()).collect();
        assert_eq!(looped, [Model::Asyncio, Model::Gevent, Model::Greenlets]);
        assert!(Model::Mixed.needs_runner() && !Model::Threads.needs_runner());
    }
}
