//! The accept loop of a ProtoBuf:1 server: one thread per connection.
//!
//! Kong keeps a pool of connections per worker and runs one event at a time
//! on each, so the connections in use are about the requests in flight;
//! a thread that blocks on its own connection (as go-pdk's goroutines do)
//! needs no hand-off between threads for a PDK call.
//!
//! With `--handler-timeout`, the watchdog runs beside the accept loop
//! (`timeout.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

use super::executor::PbExecutor;
use super::ids::ShortIds;
use super::session::serve_connection;
use super::shared::Shared;
use super::timeout::answer_taken;
use crate::models::threads::watchdog::{watchdog, Watched};
use crate::service::Service;

pub async fn accept_loop(
    listener: UnixListener,
    service: Arc<Service>,
    exec: Arc<PbExecutor>,
    max_frame: usize,
    handler_timeout: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
) {
    let watched = handler_timeout.map(|_| Arc::new(Watched::default()));
    let shared = Arc::new(Shared {
        service,
        exec,
        ids: ShortIds::from_clock(),
        max_frame,
        stop: Arc::new(AtomicBool::new(false)),
        watched: watched.clone(),
    });
    if let (Some(limit), Some(watched)) = (handler_timeout, &watched) {
        tokio::spawn(watchdog(
            Arc::downgrade(watched),
            limit,
            answer_taken(Arc::downgrade(&shared)),
        ));
    }
    let mut last_error: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted.and_then(|(s, _)| s.into_std()) {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, most likely: say so at most every 10 s.
                if last_error.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                    log::error!("accepting a connection failed: {e}");
                    last_error = Some(std::time::Instant::now());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("kong-pdk-pb".into())
            .spawn(move || serve_connection(for_thread, stream));
        if let Err(e) = spawned {
            log::error!("no thread for a ProtoBuf:1 connection: {e}");
        }
    }
    shared.stop.store(true, Ordering::Release);
}
