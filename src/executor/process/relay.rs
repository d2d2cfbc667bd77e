//! One event's relay between Kong and a worker (docs/protocol.md §5).
//!
//! The core plays Kong towards the worker: `plugin.HandleEvent` there, then
//! each `{Method, Args}` the worker's handler sends becomes the reply to Kong
//! through the event's [`EventLink`], and Kong's Step becomes a Step to the
//! worker, until the worker says `"ret"` or calls a terminal PDK function.
//! An event that loses its worker ends for Kong like a handler that raised.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;

use super::client::{parse_output, Conn, Failure, Output};
use super::instances::Entry;
use super::workers::{Load, Worker, WorkerState, WAIT_FOR_WORKER};
use super::Inner;
use crate::events::{Answer, EventLink};
use crate::executor::fail_closed::fail_closed;
use crate::executor::{EventJob, PluginHandle};
use crate::pdk_table::PdkTable;
use crate::phase::Phase;
use crate::rpc::map;
use crate::rpc_error::RpcError;

/// One event's line to its worker: every RPC of the event goes over the same
/// connection. While a thread-model handler waits for its next Step it reads
/// the connection that carried its last reply (`events/lent.rs`), so the
/// Step arrives right where it is awaited. The connection goes back to the
/// pool when the event ends.
struct Session {
    load: Load,
    st: WorkerState,
    conn: Option<Conn>,
    max_frame: usize,
}

impl Session {
    fn worker(&self) -> &Arc<Worker> {
        self.load.worker()
    }

    async fn call(&mut self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        let w = Arc::clone(self.worker());
        if w.state().generation != self.st.generation {
            return Err(Failure::Undelivered(
                "the worker process was replaced".into(),
            ));
        }
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => w.checkout(self.st, self.max_frame).await?,
        };
        let result = conn.request(method, params).await;
        if matches!(result, Ok(_) | Err(Failure::Remote(_))) {
            self.conn = Some(conn);
        }
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.load.worker().checkin(conn);
        }
    }
}

impl Inner {
    /// Runs one event on a worker and relays it to Kong.
    pub(super) async fn drive(self: Arc<Self>, job: EventJob) {
        let EventJob {
            phase,
            instance,
            link,
        } = job;
        let entry = match &instance.instance().handle {
            PluginHandle::Remote(k) => self.entry(k.key),
            PluginHandle::Python(_) => None,
        };
        let Some(entry) = entry else {
            // Cannot happen: the instance holds its key until it is dropped.
            self.end_lost(
                &link,
                phase,
                "its instance is unknown to the worker processes",
            )
            .await;
            return;
        };
        let mut tried = Vec::new();
        let deadline = Instant::now() + WAIT_FOR_WORKER;
        let (mut session, mut reply) = loop {
            let Some((w, st)) = self.workers.pick(&tried, &self.stop).await else {
                self.end_lost(&link, phase, "no worker process is running")
                    .await;
                return;
            };
            let mut session = Session {
                load: Load::new(&w),
                st,
                conn: None,
                max_frame: self.max_frame,
            };
            match self.start_event(&entry, &mut session, phase).await {
                Ok(reply) => break (session, reply),
                // Not run: another worker may take it.
                Err(Failure::Undelivered(e)) => {
                    log::debug!("worker {}: {e}; trying another", w.index);
                    if Instant::now() >= deadline {
                        let why = format!("no worker process took it: {e}");
                        self.end_lost(&link, phase, &why).await;
                        return;
                    }
                    tried.push(w.index);
                    if tried.len() >= self.workers.all().len() {
                        // All tried: wait for the supervisors to notice.
                        tried.clear();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Err(e) => {
                    let why = format!("worker process {} (pid {}) lost it: {e}", w.index, st.pid);
                    self.end_lost(&link, phase, &why).await;
                    return;
                }
            }
        };
        let (w, st) = (Arc::clone(session.worker()), session.st);
        loop {
            let (output, remote_id) = match parse_output(&reply) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.end_lost(&link, phase, &format!("worker {}: {e}", w.index))
                        .await;
                    return;
                }
            };
            let (method, args) = match output {
                Output::Ret => {
                    let _ = link.done();
                    return;
                }
                Output::Call { method, args } => (method, args),
            };
            // The worker already ended its side of a terminal call (§5.2.3).
            if PdkTable::get()
                .function(&method)
                .is_some_and(|f| f.terminal)
            {
                let _ = link.terminal(&method, &args);
                return;
            }
            let Ok(answered) = link.call(&method, &args) else {
                // Kong cannot be reached any more: stop the worker's side too.
                abandon(&mut session, remote_id).await;
                return;
            };
            let Ok(resume) = answered.await else {
                // Kong abandoned the event (the reaper's deadline, or shutdown).
                abandon(&mut session, remote_id).await;
                return;
            };
            let (step, data) = match link.resume(resume) {
                Answer::Value(v) => ("plugin.Step", v),
                Answer::Error(e) => ("plugin.StepError", Some(Value::from(e))),
            };
            let mut params = vec![("EventId", Value::from(remote_id))];
            if let Some(data) = data {
                params.push(("Data", data));
            }
            reply = match session.call(step, &[map(params)]).await {
                Ok(reply) => reply,
                Err(e) => {
                    let why = format!("worker process {} (pid {}) lost it: {e}", w.index, st.pid);
                    self.end_lost(&link, phase, &why).await;
                    return;
                }
            };
        }
    }

    /// HandleEvent on the session's worker, creating the instance there
    /// first if needed; once more after "no plugin instance" (the worker
    /// expired it).
    async fn start_event(
        &self,
        entry: &Entry,
        session: &mut Session,
        phase: Phase,
    ) -> Result<Value, Failure> {
        let (w, st) = (Arc::clone(session.worker()), session.st);
        let mut retried = false;
        loop {
            let id = self.ensure(entry, &w, st).await?;
            let params = [map(vec![
                ("InstanceId", Value::from(id)),
                ("EventName", Value::from(phase.name())),
            ])];
            match session.call("plugin.HandleEvent", &params).await {
                Err(Failure::Remote(e)) if !retried && RpcError::NoInstance(0).names(&e) => {
                    retried = true;
                    entry.forget(&w, st, id).await;
                }
                // Refused before anything ran (e.g. the worker is draining).
                Err(Failure::Remote(e)) => return Err(Failure::Undelivered(e)),
                other => return other,
            }
        }
    }

    /// Ends an event that lost its handler: failed closed (fail_closed.rs),
    /// so an auth plugin whose worker crashed never lets the request through.
    async fn end_lost(&self, link: &EventLink, phase: Phase, why: &str) {
        self.lost.fetch_add(1, Ordering::AcqRel);
        let message = format!("{} handler ended: {why}", link.label);
        log::error!("event {}: {message}", link.event_id);
        fail_closed(link, phase, &message).await;
    }
}

/// Ends the worker's side of an event Kong gave up on: the handler there
/// wakes with `EventAbandoned`, as it would under the thread model's reaper
/// (docs/protocol.md §5.2.5). Best effort: the worker's own deadline, set a little
/// after the core's, catches what this misses.
async fn abandon(session: &mut Session, remote_id: u64) {
    let params = [map(vec![("EventId", Value::from(remote_id))])];
    if let Err(e) = session.call("plugin.AbandonEvent", &params).await {
        let index = session.worker().index;
        log::debug!("worker {index}: abandoning event {remote_id}: {e}");
    }
}
