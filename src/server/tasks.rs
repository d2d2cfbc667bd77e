//! The runtime's background tasks: accepting connections, and reaping
//! events Kong abandoned and instances left idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::dispatch::Dispatcher;
use crate::service::Service;

pub async fn accept_loop(
    listener: UnixListener,
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = FailureLog::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(crate::connection::serve(
                        stream,
                        Arc::clone(&dispatcher),
                        max_frame,
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so once in a while, not 20 times a second.
                    failures.record(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Logs accept failures at most once per [`FailureLog::EVERY`], with how
/// many were not logged.
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn record(&mut self, e: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.unlogged += 1;
            return;
        }
        let also = match self.unlogged {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        log::error!(
            "accept failed: {e}{also}; new connections wait (raise the open-files limit, ulimit -n)"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

pub async fn reaper(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let period = (service.settings.event_timeout / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => service.reap(),
            _ = stop.changed() => return,
        }
    }
}
