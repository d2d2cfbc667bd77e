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

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn the_first_failure_is_logged_and_the_next_ones_counted() {
        let mut log = FailureLog::default();
        log.record(&emfile());
        let first = log.last.expect("logged");
        assert_eq!(log.unlogged, 0);
        for _ in 0..3 {
            log.record(&emfile());
        }
        // Within EVERY of the report: counted, not logged.
        assert_eq!(log.unlogged, 3);
        assert_eq!(log.last, Some(first));
    }

    #[test]
    fn a_failure_after_the_quiet_time_is_logged_again() {
        let mut log = FailureLog::default();
        log.record(&emfile());
        log.record(&emfile());
        assert_eq!(log.unlogged, 1);
        let long_ago = Instant::now()
            .checked_sub(FailureLog::EVERY + Duration::from_secs(1))
            .expect("an instant 11 s ago");
        log.last = Some(long_ago);
        log.record(&emfile());
        // Logged (with the one not logged), and the count starts over.
        assert_eq!(log.unlogged, 0);
        assert!(log.last.is_some_and(|t| t > long_ago));
    }
}
