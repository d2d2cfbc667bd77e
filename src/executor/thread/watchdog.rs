//! `--handler-timeout`: fails closed every event whose handler has held
//! Kong's request too long without answering. The Python thread cannot be
//! stopped; the event is taken from it (its later PDK calls raise
//! `EventAbandoned`) and Kong gets its answer from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::events::EventLink;
use crate::executor::fail_closed::{fail_closed, timed_out_message};
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
pub async fn watchdog(watched: Weak<Watched>, limit: Duration, runtime: tokio::runtime::Handle) {
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
            runtime.spawn(async move { fail_closed(&link, phase, &message).await });
        }
    }
}
