//! The event registry, and how an event's outputs reach Kong.
//!
//! An event is one run of one phase handler (docs/protocol.md §5). Its handler runs
//! elsewhere (an executor); each of its outputs answers the RPC Kong is
//! waiting on: a PDK call `{Method, Args}`, a terminal call, or `"ret"`. The
//! handler's side writes that reply itself through the event's [`Route`] (the
//! connection and msgid of the RPC in flight). Before writing a PDK call it
//! *parks* the event here, keyed by the server-wide event id and never by
//! connection: Kong's next `Step` may come on any pooled connection (§2). The
//! Step takes the event out and hands the handler Kong's answer together with
//! the route of the new RPC.
//!
//! An event leaves the registry on every ending: `ret`, a terminal call, an
//! exception, the Kong-side deadline, or shutdown. Dropping a parked entry
//! drops its resume sender, which wakes the handler with an error, so no
//! handler waits forever.
//!
//! The rooms:
//! * `registry.rs`: the events waiting for Kong, by id, and Kong's answers;
//! * `route.rs`: where a reply goes (a connection and a msgid), and the
//!   connection's reading lent to a handler;
//! * `stage.rs`: where one event stands (running, or how it ended): the one
//!   state machine of every model's event;
//! * `link.rs`: the handler's side of one event, which writes its outputs;
//! * `fail_closed.rs`: how an event whose handler failed still answers Kong;
//! * `lent.rs`: the thread model's fast path: a handler's thread reads the
//!   connection it was lent, takes its own Steps off it and serves other
//!   events' HandleEvents and Steps that come there.

pub mod fail_closed;
mod lent;
mod link;
mod registry;
mod route;
mod stage;

pub use lent::Filled;
pub use link::{EventLink, LinkError};
pub use registry::{step_answer, Answer, Events, Registry, Resume, Stepped};
pub use route::{Here, Lend, Route, ServeLent, Served};
pub use stage::{Stage, StageCell};
