//! `--handler-timeout` on ProtoBuf:1's thread model. MessagePack:1's
//! thread-model watchdog (`models/threads/watchdog.rs`, a periodic task on
//! the runtime) watches the running handlers' events; a handler that holds
//! Kong's request past the limit has its event taken from it
//! (`PbEvent::take`: its later PDK calls raise `EventAbandoned`, its return
//! sends nothing). The handler's thread is stuck in Python and holds the
//! connection's only reader, so a new thread takes the connection over: it
//! fails the event closed as if the handler had raised (`kong.log.err`,
//! then `kong.response.exit(500, ...)` in rewrite/access), ends it, and
//! serves Kong's next commands on that connection. The stuck thread leaves
//! the connection when its handler returns.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::conn::Conn;
use super::event::{Command, PbEvent};
use super::handler::{end_failed, After};
use super::session::serve_on;
use super::shared::Shared;
use crate::models::threads::watchdog::{Overran, Watchable};
use crate::phase::Phase;

/// An event taken from its handler, and the connection it came on.
pub struct Taken {
    event_id: u64,
    command: Command,
    conn: Arc<Conn>,
}

impl Overran for Taken {
    fn event_id(&self) -> u64 {
        self.event_id
    }
    fn label(&self) -> &str {
        &self.command.label
    }
}

impl Watchable for PbEvent {
    type Taken = Taken;
    fn watched_id(&self) -> u64 {
        self.event_id
    }
    fn take_over(&self, limit: Duration) -> Option<Taken> {
        self.take(limit).then(|| Taken {
            event_id: self.event_id,
            command: Command {
                sequence: self.command.sequence,
                label: Arc::clone(&self.command.label),
            },
            conn: Arc::clone(self.conn()),
        })
    }
}

/// What the watchdog does with a taken event: a thread of its own answers
/// Kong (its calls wait for Kong's replies, which the runtime must not),
/// then serves the connection on.
pub fn answer_taken(shared: Weak<Shared>) -> impl Fn(Taken, Phase, &str) + Send + 'static {
    move |taken, phase, message| {
        let shared = Weak::clone(&shared);
        let message = message.to_owned();
        let spawned = std::thread::Builder::new()
            .name("kong-pdk-pb".into())
            .spawn(move || {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let Taken {
                    event_id,
                    command,
                    conn,
                } = taken;
                let after = end_failed(&shared, &conn, event_id, phase, command, &message);
                if matches!(after, After::ServeOn) {
                    serve_on(shared, conn);
                }
            });
        if let Err(e) = spawned {
            log::error!("no thread to fail a timed-out event closed: {e}");
        }
    }
}
