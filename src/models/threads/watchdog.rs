//! `--handler-timeout`: fails closed every event whose handler has held
//! Kong's request too long without answering. The Python thread cannot be
//! stopped; the event is taken from it (its later PDK calls raise
//! `EventAbandoned`) and Kong gets its answer from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::events::fail_closed::timed_out_message;
use crate::events::EventLink;
use crate::pdk::EventCtx;
use crate::phase::Phase;

/// The events whose handlers run now.
#[derive(Default)]
pub struct Watched(Mutex<HashMap<u64, (Weak<EventCtx>, Phase)>>);

impl Watched {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Weak<EventCtx>, Phase)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch(&self, ctx: &Arc<EventCtx>, phase: Phase) {
        self.lock()
            .insert(ctx.event_id, (Arc::downgrade(ctx), phase));
    }

    pub fn unwatch(&self, event_id: u64) {
        self.lock().remove(&event_id);
    }
}

/// Fails closed every event whose handler has held Kong's request for
/// `limit`; ends with the executor.
pub async fn watchdog(watched: Weak<Watched>, limit: Duration) {
    let period = (limit / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let stuck: Vec<(EventLink, Phase)> = watched
            .lock()
            .values()
            .filter_map(|(ctx, phase)| {
                let ctx = ctx.upgrade()?;
                ctx.take_over(limit).map(|link| (link, *phase))
            })
            .collect();
        for (link, phase) in stuck {
            let message = timed_out_message(&link.label, limit);
            log::error!("event {}: {message}", link.event_id);
            link.fail_closed(phase, &message);
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
        rt.spawn(watchdog(Arc::downgrade(&watched), limit));
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
            watchdog(w, Duration::from_millis(20)).await;
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
