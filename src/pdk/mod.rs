//! The `kong` object handed to phase handlers: our bridge to Kong's PDK.
//!
//! `kong.request.get_header("host")` walks attribute names down a process-wide
//! tree of dotted paths (each path is resolved and interned once) and the call
//! becomes one `{Method, Args}` reply to Kong, written through the event's
//! `EventLink` (events/link.rs). The handler then waits for Kong's Step with the GIL
//! released (docs/architecture.md, "Design rules": the GIL is held only while Python runs), or, on an
//! event loop, gets a token the loop resolves later.
//!
//! Two PDK rules live here:
//! * terminal calls (`kong.response.exit`/`error`) are sent, the event ends at
//!   once and the handler unwinds with `PluginExit` (docs/protocol.md §5.2.3);
//! * an argument list with `None` before a later argument would be cut by Lua's
//!   `unpack` (docs/protocol.md §11.2), so such a call is fixed or refused here.
//!
//! The rooms: `path.rs` the attribute tree of dotted names, `proxy.rs` the
//! `kong` object and its argument rules, `event.rs` one event's state behind
//! its `kong` objects and the seams the executors implement (`PdkTarget`,
//! `LoopWait`), `answer.rs` Kong's answers as the plugin sees them,
//! `exceptions.rs` the Python exceptions a handler meets.

mod answer;
mod event;
mod exceptions;
mod path;
mod proxy;

pub use answer::answer_to_py;
pub use event::{EventCtx, LoopWait, PdkTarget, Waiter};
pub use exceptions::{
    concurrent_call_error, ended_error, event_abandoned, event_abandoned_type, plugin_exit_type,
};
pub use proxy::PdkProxy;
