//! After its handler returned, a handler's thread goes on reading the
//! connection that carried the event's `"ret"`.
//!
//! Kong hands a connection back to its keep-alive pool after each reply and
//! takes the most recent one first, so the next HandleEvent usually comes on
//! the connection that just carried `"ret"`. The thread that wrote it reads
//! that connection itself and runs the new event's handler at once: no
//! hand-off from an I/O thread to a pool thread, and no waking the
//! connection's I/O task to give the connection back. Another event's Step
//! that comes there is passed to its handler, with the connection.
//!
//! A lingering thread counts as idle in the pool (`pool.rs`): a job from
//! elsewhere rings it, and it gives the connection back, bytes intact, to
//! the connection's I/O task before it takes the job. So do a request that
//! only the I/O task serves, a closed connection, and the pool's keep-alive
//! time without a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use crate::events::{Filled, Here, Lend, Served};
use crate::executor::EventJob;
use crate::wake::Wake;
use crate::writer::ConnWriter;

/// An event whose HandleEvent a lingering thread read.
pub(super) enum Found {
    /// The thread left the pool's idle count for it: run it here.
    Here(EventJob),
    /// The pool called the thread for a job meanwhile: run it elsewhere.
    Elsewhere(EventJob),
}

/// Reads the connection for the next event to run on this thread, for up to
/// the pool's keep-alive time; `None` when the thread goes back to the pool.
pub(super) fn linger(pool: &Pool, writer: Arc<ConnWriter>, mut lend: Lend) -> Option<Found> {
    let wake = Wake::for_this_thread()?;
    if !pool.start_lingering(&wake) {
        return None;
    }
    let since = Instant::now();
    let limit = pool.keep_alive();
    let found = loop {
        wake.clear();
        if !pool.still_lingering(&wake) {
            break None; // a job called this thread: give the connection back
        }
        let mut here: Option<EventJob> = None;
        lend = match lend.serve_next(&writer, Here::slot(&mut here)) {
            Served::Kept(kept) => kept,
            // The event it started is for this thread (`claim` takes the
            // thread out of the pool's idle count) or ran elsewhere, or the
            // Step it resumed took the connection.
            Served::Passed => match here {
                Some(job) if pool.claim_lingering(&wake) => break Some(Found::Here(job)),
                Some(job) => break Some(Found::Elsewhere(job)),
                None => break None,
            },
            Served::GiveBack(back) => {
                drop(back);
                break None;
            }
        };
        let left = limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            break None;
        }
        let timeout = left.min(Duration::from_secs(1)).as_millis() as i32;
        if let Filled::Closed = lend.fill(&writer, &wake, timeout) {
            break None;
        }
    };
    pool.stop_lingering(&wake);
    found
}

#[cfg(test)]
mod tests {
    //! A handler's thread lingering on the connection of its `"ret"`:
    //! Kong's end is a socket pair, the service runs with a mock executor.

    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    use rmpv::Value;

    use super::super::pool::promise_idle;
    use super::*;
    use crate::dispatch::{Dispatcher, Outcome};
    use crate::events::{Route, ServeLent};
    use crate::executor::{Executor, PluginHandle, RemoteKey, RunsEvents};
    use crate::handover::Hop;
    use crate::phase::Phase;
    use crate::rpc::{as_map, as_u64, field, map, Call};
    use crate::service::Encoded;
    use crate::test_support::{one_plugin_service, request};
    use crate::wire::FrameDecoder;

    struct Mock;

    impl Executor for Mock {
        fn start_instance(&self, _plugin: &str, _config: &Value) -> Result<PluginHandle, String> {
            Ok(PluginHandle::Remote(RemoteKey::new(1, |_| {})))
        }

        fn running(&self) -> usize {
            0
        }
    }

    impl RunsEvents for Mock {
        fn run_event(&self, _job: EventJob) {
            panic!("the lingering thread runs the event itself");
        }

        fn runs_on_caller(&self, _job: &EventJob) -> bool {
            true
        }
    }

    /// Kong's end of a connection lent to a lingering thread.
    struct Setup {
        kong: UnixStream,
        writer: Arc<ConnWriter>,
        lend: Lend,
        returned: tokio::sync::oneshot::Receiver<FrameDecoder>,
        instance: u64,
    }

    fn setup() -> Setup {
        let service = Arc::new(one_plugin_service(Duration::from_secs(5), Arc::new(Mock)));
        let dispatcher = Arc::new(Dispatcher {
            service: Arc::clone(&service),
            runner: Arc::new(Mock),
        });
        let (ours, kong) = UnixStream::pair().expect("socketpair");
        kong.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let writer = Arc::new(ConnWriter::new(ours, 1 << 20).expect("writer"));
        let start = Call::StartInstance {
            name: "p".into(),
            config: Value::from("{}"),
        };
        let route = Route {
            writer: Arc::clone(&writer),
            msgid: 1,
            lend: None,
        };
        let instance = match service.serve(&*service, start, Hop::Kong, route) {
            Outcome::Reply(_, Ok(Encoded::Value(v))) => as_map(&v)
                .and_then(|m| field(m, "Id"))
                .and_then(as_u64)
                .expect("an Id"),
            _ => panic!("no instance"),
        };
        let (lend, returned) =
            Lend::new(FrameDecoder::new(1 << 20), dispatcher as Arc<dyn ServeLent>);
        Setup {
            kong,
            writer,
            lend,
            returned,
            instance,
        }
    }

    fn handle_event(msgid: u64, instance: u64) -> Vec<u8> {
        request(
            msgid,
            "plugin.HandleEvent",
            map(vec![
                ("InstanceId", Value::from(instance)),
                ("EventName", Value::from("access")),
            ]),
        )
    }

    /// What `linger` found, as the test sees it.
    #[derive(Debug, PartialEq)]
    enum Got {
        Here(u64, Phase),
        Elsewhere,
        Nothing,
    }

    /// With the job found, kept alive (it holds the connection).
    fn got(found: Option<Found>) -> (Got, Option<EventJob>) {
        match found {
            Some(Found::Here(job)) => (Got::Here(job.link.event_id, job.phase), Some(job)),
            Some(Found::Elsewhere(job)) => (Got::Elsewhere, Some(job)),
            None => (Got::Nothing, None),
        }
    }

    /// Lingers on a pool thread of `pool`; the result comes on the channel.
    fn linger_on_pool(
        pool: &Pool,
        writer: Arc<ConnWriter>,
        lend: Lend,
    ) -> mpsc::Receiver<(Got, Option<EventJob>)> {
        let (tx, rx) = mpsc::channel();
        let p = pool.clone();
        let started = pool.execute((writer, lend), move |(writer, lend)| {
            promise_idle();
            tx.send(got(linger(&p, writer, lend))).expect("send");
        });
        assert!(started.is_ok(), "a thread");
        rx
    }

    #[test]
    fn the_next_handle_event_on_the_connection_runs_on_the_lingering_thread() {
        let Setup {
            mut kong,
            writer,
            lend,
            mut returned,
            instance,
        } = setup();
        let pool = Pool::new(4, Duration::from_secs(5));
        let result = linger_on_pool(&pool, writer, lend);
        kong.write_all(&handle_event(7, instance)).expect("send");
        let (found, job) = result
            .recv_timeout(Duration::from_secs(5))
            .expect("linger ended");
        let Got::Here(id, phase) = found else {
            panic!("not run here: {found:?}");
        };
        assert_eq!(job.as_ref().map(|j| j.link.event_id), Some(id));
        assert_eq!(phase, Phase::Access);
        // The event took the connection along: not given back.
        assert!(matches!(
            returned.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ));
        kong.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert!(
            kong.read(&mut buf).is_err(),
            "no reply before the handler's"
        );
    }

    #[test]
    fn a_request_only_the_io_task_serves_gives_the_connection_back_intact() {
        let Setup {
            mut kong,
            writer,
            lend,
            returned,
            ..
        } = setup();
        let pool = Pool::new(4, Duration::from_secs(5));
        let result = linger_on_pool(&pool, writer, lend);
        let status = request(3, "plugin.GetStatus", Value::Nil);
        kong.write_all(&status).expect("send");
        assert_eq!(
            result
                .recv_timeout(Duration::from_secs(5))
                .expect("ended")
                .0,
            Got::Nothing
        );
        let mut decoder = returned.blocking_recv().expect("given back");
        let frame = decoder.next_frame().expect("frame").expect("whole");
        assert_eq!(frame[1].as_u64(), Some(3), "the request, unread");
    }

    #[test]
    fn a_job_at_the_pool_limit_calls_the_lingering_thread_away() {
        let Setup {
            writer,
            lend,
            returned,
            ..
        } = setup();
        let pool = Pool::new(1, Duration::from_secs(5));
        let result = linger_on_pool(&pool, writer, lend);
        // Wait until it lingers: a job then finds the only thread lingering.
        let (ran_tx, ran_rx) = mpsc::channel();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let tx = ran_tx.clone();
            match pool.execute((), move |()| tx.send(()).expect("send")) {
                Ok(()) => break,
                // Not lingering yet: the thread is busy.
                Err(_) => {
                    assert!(std::time::Instant::now() < deadline, "never lingered");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        assert_eq!(
            result
                .recv_timeout(Duration::from_secs(5))
                .expect("ended")
                .0,
            Got::Nothing
        );
        returned.blocking_recv().expect("connection given back");
        ran_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the job ran on that thread");
    }

    #[test]
    fn a_quiet_connection_is_given_back_after_the_keep_alive() {
        let Setup {
            writer,
            lend,
            returned,
            kong,
            ..
        } = setup();
        let pool = Pool::new(4, Duration::from_millis(30));
        let result = linger_on_pool(&pool, writer, lend);
        assert_eq!(
            result
                .recv_timeout(Duration::from_secs(5))
                .expect("ended")
                .0,
            Got::Nothing
        );
        returned.blocking_recv().expect("given back");
        drop(kong);
    }

    #[test]
    fn a_closed_connection_ends_lingering() {
        let Setup {
            writer,
            lend,
            returned,
            kong,
            ..
        } = setup();
        let pool = Pool::new(4, Duration::from_secs(5));
        let result = linger_on_pool(&pool, writer, lend);
        drop(kong);
        assert_eq!(
            result
                .recv_timeout(Duration::from_secs(5))
                .expect("ended")
                .0,
            Got::Nothing
        );
        returned.blocking_recv().expect("given back");
    }
}
