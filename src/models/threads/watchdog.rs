//! `--handler-timeout`: fails closed every event whose handler has held
//! Kong's request too long without answering. The Python thread cannot be
//! stopped; the event is taken from it (its later PDK calls raise
//! `EventAbandoned`) and Kong gets its answer from here.
//!
//! The same watchdog serves ProtoBuf:1's thread model
//! (`protobuf/timeout.rs`): what it watches is any [`Watchable`] event, and
//! who answers Kong for a taken event is the caller's to say.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::events::fail_closed::timed_out_message;
use crate::events::EventLink;
use crate::pdk::EventCtx;
use crate::phase::Phase;

/// An event whose handler may hold Kong's request too long.
pub trait Watchable: Send + Sync + 'static {
    /// What answers Kong in the handler's place.
    type Taken: Overran;
    fn watched_id(&self) -> u64;
    /// Takes the event from its handler when it has held Kong's request for
    /// `limit` (the handler's later calls raise `EventAbandoned` and its
    /// return sends nothing); `None` when it has not, or the event ended.
    fn take_over(&self, limit: Duration) -> Option<Self::Taken>;
}

/// An event taken from its handler, as the log names it.
pub trait Overran: Send + 'static {
    fn event_id(&self) -> u64;
    fn label(&self) -> &str;
}

impl Watchable for EventCtx {
    type Taken = EventLink;
    fn watched_id(&self) -> u64 {
        self.event_id
    }
    fn take_over(&self, limit: Duration) -> Option<EventLink> {
        EventCtx::take_over(self, limit)
    }
}

impl Overran for EventLink {
    fn event_id(&self) -> u64 {
        self.event_id
    }
    fn label(&self) -> &str {
        &self.label
    }
}

/// The events whose handlers run now.
pub struct Watched<E = EventCtx>(Mutex<HashMap<u64, (Weak<E>, Phase)>>);

impl<E> Default for Watched<E> {
    fn default() -> Self {
        Watched(Mutex::default())
    }
}

impl<E: Watchable> Watched<E> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Weak<E>, Phase)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(&self, ctx: &Arc<E>, phase: Phase) {
        self.lock()
            .insert(ctx.watched_id(), (Arc::downgrade(ctx), phase));
    }

    pub fn unwatch(&self, event_id: u64) {
        self.lock().remove(&event_id);
    }
}

/// MessagePack:1's answer for a taken event (`events/fail_closed.rs`).
pub fn fail_link_closed(link: EventLink, phase: Phase, message: &str) {
    link.fail_closed(phase, message);
}

/// Fails closed every event whose handler has held Kong's request for
/// `limit`: logs it, and has `answer` tell Kong (`kong.log.err(message)`,
/// then a 500 where the phase can respond); ends with the executor.
/// `answer` must not block: it runs on the runtime.
pub async fn watchdog<E, F>(watched: Weak<Watched<E>>, limit: Duration, answer: F)
where
    E: Watchable,
    F: Fn(E::Taken, Phase, &str) + Send + 'static,
{
    let period = (limit / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let stuck: Vec<(E::Taken, Phase)> = watched
            .lock()
            .values()
            .filter_map(|(ctx, phase)| {
                let ctx = ctx.upgrade()?;
                ctx.take_over(limit).map(|taken| (taken, *phase))
            })
            .collect();
        drop(watched);
        for (taken, phase) in stuck {
            let message = timed_out_message(taken.label(), limit);
            log::error!("event {}: {message}", taken.event_id());
            answer(taken, phase, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::events::{Events, Route};
    use crate::ids::IdAllocator;
    use crate::pdk::{PdkTarget, Waiter};
    use crate::writer::ConnWriter;

    /// A running event `id` whose RPC in flight came on `kong`'s connection.
    fn event(id: u64, events: &Arc<Events>) -> (Arc<EventCtx>, UnixStream) {
        let (ours, kong) = UnixStream::pair().expect("socketpair");
        kong.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let writer = Arc::new(ConnWriter::new(ours, 1 << 20).expect("writer"));
        let link = EventLink::new(
            id,
            Arc::from("p.access"),
            Arc::clone(events),
            Route {
                writer,
                msgid: 1,
                lend: None,
            },
        );
        let ctx = Arc::new(EventCtx::new(Phase::Access, link, false, Waiter::Block));
        (ctx, kong)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_handler_past_the_limit_is_failed_closed_and_others_left_alone() {
        let rt = runtime();
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let watched: Arc<Watched> = Arc::default();
        let limit = Duration::from_millis(30);
        let (stuck, mut kong) = event(5, &events);
        let (unwatched, mut other) = event(6, &events);
        watched.watch(&stuck, Phase::Access);
        rt.spawn(watchdog(Arc::downgrade(&watched), limit, fail_link_closed));
        // Kong gets the timed-out handler's kong.log.err.
        let mut buf = vec![0u8; 1024];
        let n = kong.read(&mut buf).expect("a reply for Kong");
        let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
        assert_eq!(reply[1].as_u64(), Some(1), "answers the RPC in flight");
        assert_eq!(reply[3]["Data"]["Method"].as_str(), Some("kong.log.err"));
        let message = reply[3]["Data"]["Args"][0].as_str().expect("the message");
        assert_eq!(message, timed_out_message("p.access", limit));
        // The handler lost its event, and waits in the registry no more
        // than the fail-closed call does.
        assert!(stuck.is_abandoned());
        assert_eq!(events.len(), 1, "the kong.log.err waits for its Step");
        // The event nobody watched was left alone.
        assert!(!unwatched.is_abandoned());
        other.set_nonblocking(true).expect("nonblocking");
        assert!(other.read(&mut buf).is_err(), "nothing sent for event 6");
        drop(rt);
    }

    #[test]
    fn an_unwatched_event_is_not_taken() {
        let rt = runtime();
        let events = Arc::new(Events::new(IdAllocator::starting_at(1)));
        let watched: Arc<Watched> = Arc::default();
        let (ctx, mut kong) = event(5, &events);
        watched.watch(&ctx, Phase::Access);
        watched.unwatch(5);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Arc::downgrade(&watched);
        rt.spawn(async move {
            watchdog(w, Duration::from_millis(20), fail_link_closed).await;
            let _ = tx.send(());
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!ctx.is_abandoned());
        // The watchdog ends with the executor's Watched.
        drop(watched);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the watchdog ended");
        kong.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 16];
        assert!(kong.read(&mut buf).is_err(), "nothing sent");
    }
}
