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
        link.fail_closed(phase, &message);
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

#[cfg(test)]
mod tests {
    //! One event relayed between Kong (a socket pair) and a fake worker
    //! (fake_worker.rs); the core's service runs with a mock executor whose
    //! instances name the Inner's entry.

    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::dispatch::Outcome;
    use crate::events::Route;
    use crate::handover::Hop;
    use crate::models::processes::fake_worker::{inner, runtime, Fake};
    use crate::rpc::{as_map, as_u64, field, Call};
    use crate::service::{Encoded, Service};
    use crate::test_support::service_with_instances_only;
    use crate::writer::ConnWriter;

    /// The worker's id of the event (its own, unlike the core's).
    const REMOTE: u64 = 77;

    // The service's instances all name the Inner's entry 1 (`InstancesOnly`).

    /// A worker whose handler calls `kong.request.get_path` and returns.
    fn one_call(method: &str, param: &Value) -> Option<(Value, Value)> {
        let event = |data: Value| {
            Some((
                Value::Nil,
                map(vec![("EventId", Value::from(REMOTE)), ("Data", data)]),
            ))
        };
        match method {
            "plugin.StartInstance" => Some((Value::Nil, map(vec![("Id", Value::from(9))]))),
            "plugin.HandleEvent" => event(map(vec![
                ("Method", Value::from("kong.request.get_path")),
                ("Args", Value::Array(Vec::new())),
            ])),
            "plugin.Step" => {
                assert_eq!(param["EventId"].as_u64(), Some(REMOTE));
                event(Value::from("ret"))
            }
            _ => Some((Value::from("unexpected"), Value::Nil)),
        }
    }

    /// A worker that dies during the event's PDK call.
    fn dies_on_step(method: &str, param: &Value) -> Option<(Value, Value)> {
        match method {
            "plugin.Step" => None,
            _ => one_call(method, param),
        }
    }

    /// A worker whose handler calls `kong.response.exit` (terminal).
    fn exits(method: &str, param: &Value) -> Option<(Value, Value)> {
        match method {
            "plugin.HandleEvent" => Some((
                Value::Nil,
                map(vec![
                    ("EventId", Value::from(REMOTE)),
                    (
                        "Data",
                        map(vec![
                            ("Method", Value::from("kong.response.exit")),
                            ("Args", Value::Array(vec![Value::from(403)])),
                        ]),
                    ),
                ]),
            )),
            _ => one_call(method, param),
        }
    }

    /// Kong's end and the core's service.
    struct Kong {
        peer: UnixStream,
        writer: Arc<ConnWriter>,
        service: Service,
    }

    impl Kong {
        fn new() -> Kong {
            let (ours, peer) = UnixStream::pair().expect("socketpair");
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let service = service_with_instances_only(Duration::from_secs(5));
            Kong {
                peer,
                writer: Arc::new(ConnWriter::new(ours, 1 << 20).expect("writer")),
                service,
            }
        }

        fn serve(&self, call: Call, msgid: u64) -> Outcome<Route, EventJob> {
            let route = Route {
                writer: Arc::clone(&self.writer),
                msgid,
                lend: None,
            };
            self.service.serve(&self.service, call, Hop::Kong, route)
        }

        /// Kong starts an instance and an access event on it.
        fn event(&self) -> EventJob {
            let start = Call::StartInstance {
                name: "p".into(),
                config: Value::from("{}"),
            };
            let instance = match self.serve(start, 1) {
                Outcome::Reply(_, Ok(Encoded::Value(v))) => as_map(&v)
                    .and_then(|m| field(m, "Id"))
                    .and_then(as_u64)
                    .expect("an Id"),
                _ => panic!("no instance"),
            };
            let handle = Call::HandleEvent {
                instance,
                phase: "access".into(),
            };
            match self.serve(handle, 2) {
                Outcome::Run(job) => job,
                _ => panic!("no event"),
            }
        }

        /// The next reply Kong reads: msgid and result.
        fn read(&mut self) -> (u64, Value) {
            let mut buf = vec![0u8; 4096];
            let n = self.peer.read(&mut buf).expect("a reply");
            let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
            assert_eq!(reply[2], Value::Nil, "an error: {}", reply[2]);
            (reply[1].as_u64().expect("msgid"), reply[3].clone())
        }
    }

    fn step(event: u64, data: &str) -> Call {
        Call::Step {
            event,
            data: Some(Value::from(data)),
            error: false,
        }
    }

    #[test]
    fn the_workers_pdk_call_goes_to_kong_and_kongs_step_to_the_worker() {
        let fake = Fake::start(one_call);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        inner.add_entry("p", &Value::from("{}"));
        let mut kong = Kong::new();
        let job = kong.event();
        let id = job.link.event_id;
        let driven = rt.spawn(Arc::clone(&inner).drive(job));
        let (msgid, call) = kong.read();
        assert_eq!(msgid, 2, "answers the HandleEvent");
        assert_eq!(
            call["Data"]["Method"].as_str(),
            Some("kong.request.get_path")
        );
        assert_eq!(call["EventId"].as_u64(), Some(id), "the core's event id");
        assert!(matches!(kong.serve(step(id, "/x"), 3), Outcome::Deferred));
        let (msgid, ret) = kong.read();
        assert_eq!(msgid, 3);
        assert_eq!(ret["Data"].as_str(), Some("ret"));
        rt.block_on(driven).expect("relay ended");
        assert_eq!(
            fake.methods(),
            ["plugin.StartInstance", "plugin.HandleEvent", "plugin.Step"]
        );
        let calls = fake.calls();
        assert_eq!(
            calls[1].1["InstanceId"].as_u64(),
            Some(9),
            "the worker's id"
        );
        assert_eq!(calls[2].1["Data"].as_str(), Some("/x"), "Kong's answer");
        assert_eq!(inner.lost.load(Ordering::Acquire), 0);
        // The event's connection went back to the worker's pool.
        let pooled = inner.workers.all()[0].status()["IdleConnections"].as_u64();
        assert_eq!(pooled, Some(1));
    }

    #[test]
    fn an_event_that_loses_its_worker_fails_closed() {
        let fake = Fake::start(dies_on_step);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        inner.add_entry("p", &Value::from("{}"));
        let mut kong = Kong::new();
        let job = kong.event();
        let id = job.link.event_id;
        let driven = rt.spawn(Arc::clone(&inner).drive(job));
        kong.read();
        assert!(matches!(kong.serve(step(id, "/x"), 3), Outcome::Deferred));
        // kong.log.err says why, then (access) the request ends with a 500.
        let (msgid, call) = kong.read();
        assert_eq!(msgid, 3);
        assert_eq!(call["Data"]["Method"].as_str(), Some("kong.log.err"));
        let message = call["Data"]["Args"][0].as_str().expect("message");
        assert!(message.contains("lost it"), "{message}");
        // The log's Step is answered by whoever serves it, with the 500.
        let Outcome::Reply(route, Ok(Encoded::Call { event, call })) = kong.serve(step(id, ""), 4)
        else {
            panic!("the Step of the log gets the 500");
        };
        assert_eq!((route.msgid, event), (4, id));
        assert_eq!(call.method, "kong.response.error");
        let args = rmpv::decode::read_value(&mut call.args.as_slice()).expect("msgpack");
        assert_eq!(args, Value::Array(vec![Value::from(500)]));
        assert_eq!(kong.service.events.len(), 0, "the event has ended");
        rt.block_on(driven).expect("relay ended");
        assert_eq!(inner.lost.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_terminal_call_ends_the_event_without_a_step() {
        let fake = Fake::start(exits);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        inner.add_entry("p", &Value::from("{}"));
        let mut kong = Kong::new();
        let job = kong.event();
        rt.block_on(Arc::clone(&inner).drive(job));
        let (msgid, call) = kong.read();
        assert_eq!(msgid, 2);
        assert_eq!(call["Data"]["Method"].as_str(), Some("kong.response.exit"));
        assert_eq!(call["Data"]["Args"][0].as_u64(), Some(403));
        assert_eq!(kong.service.events.len(), 0, "nothing waits for a Step");
        assert_eq!(
            fake.methods(),
            ["plugin.StartInstance", "plugin.HandleEvent"]
        );
    }

    #[test]
    fn with_no_worker_running_the_event_fails_closed() {
        let rt = runtime();
        let inner = inner("/nonexistent/w.sock".into(), &rt);
        inner.add_entry("p", &Value::from("{}"));
        inner.workers.all()[0].mark_down();
        inner.stop.set();
        let mut kong = Kong::new();
        let job = kong.event();
        let driven = rt.spawn(Arc::clone(&inner).drive(job));
        let (msgid, call) = kong.read();
        assert_eq!(msgid, 2);
        let message = call["Data"]["Args"][0].as_str().expect("message");
        assert!(
            message.contains("no worker process is running"),
            "{message}"
        );
        drop(driven);
    }
}
