//! Serving one typed call (`rpc::Call`), the same way wherever it was read:
//! by a connection's I/O task (`connection.rs`), by a handler's thread on a
//! lent connection (`events/lent.rs`, `models/threads/linger.rs`), or by the
//! looped model's loop (`models/looped/dispatch.rs`).
//!
//! [`Service::serve`] decides everything about a call: whether it goes to
//! another server of ours (`handover.rs`), what the method does, and what the
//! caller is left to do ([`Outcome`]): write a reply, nothing (the event's
//! handler replies), run the new event, or pass the call on. What differs
//! between execution models is only where events live and run: an
//! [`EventSide`]. The service's own registry is one (every model but the
//! looped one); the looped model's loop is the other.

use std::path::PathBuf;
use std::sync::Arc;

use rmpv::Value;

use crate::events::{
    step_answer, EventLink, Here, Lend, Resume, Route, ServeLent, Served, Stepped as ParkedStepped,
};
use crate::executor::{EventJob, SharedRunner};
use crate::handover::Hop;
use crate::rpc::{self, Call, Request};
use crate::rpc_error::RpcError;
use crate::service::{set_plugin_dir, AcceptedEvent, Encoded, Reply, Service};
use crate::writer::ConnWriter;

/// Where an execution model keeps its events, and how it starts, resumes
/// and abandons one.
pub trait EventSide {
    /// Where a reply goes.
    type Route;
    /// What the caller runs for a new event (`Infallible` when the side
    /// starts it itself).
    type Job;

    /// Starts an accepted event.
    fn start(&self, event: AcceptedEvent, route: Self::Route) -> Outcome<Self::Route, Self::Job>;

    /// Resumes event `id` with Kong's answer.
    fn step(
        &self,
        id: u64,
        data: Option<Value>,
        error: bool,
        route: Self::Route,
    ) -> Stepped<Self::Route>;

    /// Ends event `id`, which Kong abandoned (`plugin.AbandonEvent`).
    fn abandon(&self, id: u64) -> Result<(), RpcError>;

    /// Whether event `id` is in flight here.
    fn has_event(&self, id: u64) -> bool;
}

/// What a Step came to.
pub enum Stepped<R> {
    /// The handler took the route: it writes the reply.
    Resumed,
    /// The reply to write now.
    Reply(R, Reply),
    /// No such event here: Kong's `Data` comes back with the route (the Step
    /// may be passed on whole).
    Unknown(Option<Value>, R),
}

/// What serving a call leaves to its caller.
pub enum Outcome<R, J> {
    /// Write this reply on the route.
    Reply(R, Reply),
    /// The event's handler writes the reply (it took the route).
    Deferred,
    /// Run this new event; its handler writes the reply.
    Run(J),
    /// Pass the call on to another server of ours.
    Pass(Pass<R>),
}

/// A call to pass on (`handover.rs`).
pub struct Pass<R> {
    pub call: Call,
    pub route: R,
    /// The other server's socket (or the link to it).
    pub to: PathBuf,
    /// The direction: to a newer server (`FromOlder`) or back to an older one.
    pub hop: Hop,
    /// The answer when the call cannot be passed on.
    pub otherwise: RpcError,
}

/// What a method did, or its refusal that another server may take instead.
type Handled<R, J> = Result<Outcome<R, J>, Refused<R>>;

/// A call refused with an error that may send it to another server.
struct Refused<R> {
    error: RpcError,
    call: Call,
    route: R,
}

impl Service {
    /// Serves one call that came from `hop`; the reply goes to `route`.
    /// Blocking for a StartInstance (the plugin's constructor runs).
    pub fn serve<S: EventSide>(
        &self,
        side: &S,
        call: Call,
        hop: Hop,
        route: S::Route,
    ) -> Outcome<S::Route, S::Job> {
        let near = self.neighbours();
        if let Some(to) = near.forward_before(&call, hop, |id| side.has_event(id)) {
            return Outcome::Pass(Pass {
                call,
                route,
                to: to.to_path_buf(),
                hop: Hop::FromOlder,
                otherwise: RpcError::HandedOver,
            });
        }
        let refused = match self.serve_here(side, call, route) {
            Ok(outcome) => return outcome,
            Err(refused) => refused,
        };
        match near.pass_after(&refused.error, hop) {
            Some((to, hop)) => Outcome::Pass(Pass {
                call: refused.call,
                route: refused.route,
                to: to.to_path_buf(),
                hop,
                otherwise: refused.error,
            }),
            None => Outcome::Reply(refused.route, Err(refused.error)),
        }
    }

    /// What each method does; a refusal that another server may take
    /// instead comes back with its call.
    fn serve_here<S: EventSide>(
        &self,
        side: &S,
        call: Call,
        route: S::Route,
    ) -> Handled<S::Route, S::Job> {
        let reply = match call {
            Call::StartInstance { name, config } => match self.start_instance_now(&name, &config) {
                Err(error @ RpcError::HandedOver) => {
                    let call = Call::StartInstance { name, config };
                    return Err(Refused { error, call, route });
                }
                reply => reply,
            },
            Call::HandleEvent { instance, phase } => match self.accept_event(instance, &phase) {
                Ok(event) => return Ok(side.start(event, route)),
                Err(error @ RpcError::HandedOver) => {
                    let call = Call::HandleEvent { instance, phase };
                    return Err(Refused { error, call, route });
                }
                Err(e) => Err(e),
            },
            Call::Step { event, data, error } => {
                return match side.step(event, data, error, route) {
                    Stepped::Resumed => Ok(Outcome::Deferred),
                    Stepped::Reply(route, reply) => Ok(Outcome::Reply(route, reply)),
                    Stepped::Unknown(data, route) => Err(Refused {
                        error: RpcError::UnknownEvent(event),
                        call: Call::Step { event, data, error },
                        route,
                    }),
                }
            }
            Call::AbandonEvent { event } => match side.abandon(event) {
                Ok(()) => Ok(Encoded::Value(Value::from("ok"))),
                Err(error @ RpcError::UnknownEvent(_)) => {
                    let call = Call::AbandonEvent { event };
                    return Err(Refused { error, call, route });
                }
                Err(e) => Err(e),
            },
            Call::CloseInstance { id } => self.close_instance(id),
            Call::GetStatus => Ok(Encoded::Value(self.status())),
            Call::GetPluginInfo { name } => self.plugin_info(name.as_deref()),
            Call::InstanceStatus { id } => self.instance_status(id),
            Call::SetPluginDir { dir } => set_plugin_dir(&dir),
        };
        Ok(Outcome::Reply(route, reply))
    }
}

/// The service's own registry: events wait in `Service::events`, and the
/// caller hands a new one to the executor (or runs it itself, `linger.rs`).
impl EventSide for Service {
    type Route = Route;
    type Job = EventJob;

    fn start(&self, event: AcceptedEvent, route: Route) -> Outcome<Route, EventJob> {
        Outcome::Run(EventJob {
            phase: event.phase,
            instance: event.instance,
            link: EventLink::new(event.id, event.label, Arc::clone(&self.events), route),
        })
    }

    fn step(&self, id: u64, data: Option<Value>, error: bool, route: Route) -> Stepped<Route> {
        let Some(parked) = self.events.take(id) else {
            return Stepped::Unknown(data, route);
        };
        let answer = step_answer(data, error);
        match parked.step(Resume { answer, route }) {
            ParkedStepped::Resumed => Stepped::Resumed,
            ParkedStepped::End(route, None) => Stepped::Reply(route, Ok(Encoded::Ret(id))),
            ParkedStepped::End(route, Some(call)) => {
                Stepped::Reply(route, Ok(Encoded::Call { event: id, call }))
            }
        }
    }

    /// Drops a parked event as the reaper does (docs/protocol.md §5.2.5):
    /// its handler wakes with `EventAbandoned`.
    fn abandon(&self, id: u64) -> Result<(), RpcError> {
        let parked = self.events.take(id).ok_or(RpcError::UnknownEvent(id))?;
        log::info!("event {id} abandoned by the core process");
        drop(parked);
        Ok(())
    }

    fn has_event(&self, id: u64) -> bool {
        self.events.contains(id)
    }
}

/// The service with the executor that runs its events: what a connection's
/// I/O task (`connection.rs`) and a handler's thread on a lent connection
/// serve with, in every model but the looped one (whose loop starts its
/// events itself).
pub struct Dispatcher {
    pub service: Arc<Service>,
    pub runner: SharedRunner,
}

impl Dispatcher {
    /// Starts an event that a call started, on the executor.
    pub fn run(&self, job: EventJob) {
        self.runner.run_event(job);
    }
}

/// A handler's thread serves the HandleEvents and Steps that come on the
/// connection it reads (`events/lent.rs`, `models/threads/linger.rs`), as
/// the connection's I/O task would, without waking it.
impl ServeLent for Dispatcher {
    fn takes(&self, req: &Request) -> bool {
        let service = &self.service;
        req.call.as_ref().is_ok_and(|call| {
            service
                .neighbours()
                .served_on_lent(call, |id| service.events.contains(id))
        })
    }

    fn serve_lent(
        &self,
        req: Request,
        writer: &Arc<ConnWriter>,
        lend: Lend,
        here: Here<'_>,
    ) -> Served {
        let service = &*self.service;
        service.note_request();
        let Ok(call) = req.call else {
            return Served::GiveBack(lend);
        };
        let method = call.method();
        let route = Route {
            writer: Arc::clone(writer),
            msgid: req.msgid,
            lend: Some(lend),
        };
        let (route, reply) = match service.serve(service, call, Hop::of(req.tag.as_deref()), route)
        {
            Outcome::Deferred => return Served::Passed,
            Outcome::Run(job) => {
                match here.take::<EventJob>() {
                    Some(slot) if self.runner.runs_on_caller(&job) => *slot = Some(job),
                    _ => self.runner.run_event(job),
                }
                return Served::Passed;
            }
            Outcome::Reply(route, reply) => (route, reply),
            // Passing on is the I/O task's (`takes`); the neighbours changed
            // since: the call gets this server's answer.
            Outcome::Pass(pass) => (pass.route, Err(pass.otherwise)),
        };
        let out = reply_bytes(req.msgid, method, reply);
        if writer.write_all(&out).is_err() {
            log::debug!("connection closed before the reply was written");
        }
        match route.lend {
            Some(lend) => Served::Kept(lend),
            None => Served::Passed,
        }
    }
}

/// The bytes of the reply to request `msgid` (of `method`, for the log of
/// an error).
pub fn reply_bytes(msgid: u64, method: &str, reply: Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match reply {
        Ok(Encoded::Value(v)) => rpc::write_ok(&mut out, msgid, &v),
        Ok(Encoded::Ret(event)) => {
            rpc::write_ok_prefix(&mut out, msgid);
            rpc::write_ret(&mut out, event);
        }
        Ok(Encoded::Call { event, call }) => {
            rpc::write_ok_prefix(&mut out, msgid);
            rpc::write_call_result(&mut out, event, call.method, &call.args);
        }
        Err(e) => {
            log::log!(e.log_level(), "{method}: {e}");
            rpc::write_error(&mut out, msgid, &e.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! `Service::serve` against a mock executor and a socket pair standing
    //! for Kong's connection (in the spirit of go-pdk's bridgetest): the
    //! replies Kong would read, without Python.

    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::events::Answer;
    use crate::phase::Phase;
    use crate::rpc::{as_map, as_u64, field, map};
    use crate::test_support::service_with_instances_only;

    /// Kong's end of one connection.
    struct Kong {
        writer: Arc<ConnWriter>,
        peer: UnixStream,
    }

    impl Kong {
        fn new() -> Kong {
            let (ours, peer) = UnixStream::pair().expect("socketpair");
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            Kong {
                writer: Arc::new(ConnWriter::new(ours, 1 << 20).expect("writer")),
                peer,
            }
        }

        fn route(&self, msgid: u64) -> Route {
            Route {
                writer: Arc::clone(&self.writer),
                msgid,
                lend: None,
            }
        }

        /// The next reply: its msgid and result.
        fn read(&mut self) -> (u64, Value) {
            let mut buf = vec![0u8; 4096];
            let n = self.peer.read(&mut buf).expect("a reply");
            let reply = rmpv::decode::read_value(&mut &buf[..n]).expect("msgpack");
            let Value::Array(items) = reply else {
                panic!("not a reply: {reply}");
            };
            assert_eq!(items[2], Value::Nil, "an error: {}", items[2]);
            (items[1].as_u64().expect("msgid"), items[3].clone())
        }
    }

    /// Events come back to the test as `Outcome::Run`.
    fn service() -> Service {
        service_with_instances_only(Duration::from_secs(1))
    }

    fn serve(service: &Service, call: Call, route: Route) -> Outcome<Route, EventJob> {
        service.serve(service, call, Hop::Kong, route)
    }

    fn value(outcome: Outcome<Route, EventJob>) -> Reply {
        match outcome {
            Outcome::Reply(_, reply) => reply,
            Outcome::Deferred => panic!("deferred"),
            Outcome::Run(_) => panic!("an event to run"),
            Outcome::Pass(pass) => panic!("passed to {}", pass.to.display()),
        }
    }

    fn instance(service: &Service, kong: &Kong) -> u64 {
        let call = Call::StartInstance {
            name: "p".into(),
            config: Value::from("{}"),
        };
        match value(serve(service, call, kong.route(1))) {
            Ok(Encoded::Value(v)) => as_map(&v)
                .and_then(|m| field(m, "Id"))
                .and_then(as_u64)
                .expect("an Id"),
            other => panic!("{other:?}"),
        }
    }

    fn handle_event(service: &Service, kong: &Kong, instance: u64) -> EventJob {
        let call = Call::HandleEvent {
            instance,
            phase: "access".into(),
        };
        match serve(service, call, kong.route(2)) {
            Outcome::Run(job) => job,
            _ => panic!("no event"),
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
    fn an_event_calls_the_pdk_is_stepped_and_returns() {
        let service = service();
        let mut kong = Kong::new();
        let job = handle_event(&service, &kong, instance(&service, &kong));
        assert_eq!(job.phase, Phase::Access);
        let id = job.link.event_id;

        // The handler's PDK call answers the HandleEvent.
        let resumed = job
            .link
            .call("kong.request.get_header", &[0x91, 0xa1, b'x']);
        let resumed = resumed.expect("written");
        let (msgid, result) = kong.read();
        assert_eq!(msgid, 2);
        assert_eq!(
            result["Data"]["Method"].as_str(),
            Some("kong.request.get_header")
        );
        assert_eq!(result["EventId"].as_u64(), Some(id));

        // Kong's Step resumes it, with the route of the Step.
        let outcome = serve(&service, step(id, "host"), kong.route(3));
        assert!(matches!(outcome, Outcome::Deferred));
        let resume = resumed.blocking_recv().expect("resumed");
        assert_eq!(resume.route.msgid, 3);
        match job.link.resume(resume) {
            Answer::Value(v) => assert_eq!(v, Some(Value::from("host"))),
            Answer::Error(e) => panic!("{e}"),
        }

        // The handler returns: "ret" answers the Step.
        job.link.done().expect("ret written");
        let (msgid, result) = kong.read();
        assert_eq!(msgid, 3);
        assert_eq!(
            result,
            map(vec![
                ("Data", Value::from("ret")),
                ("EventId", Value::from(id))
            ])
        );
        assert_eq!(service.events.len(), 0);
    }

    #[test]
    fn a_step_of_an_event_whose_handler_is_gone_gets_ret() {
        let service = service();
        let mut kong = Kong::new();
        let job = handle_event(&service, &kong, instance(&service, &kong));
        let id = job.link.event_id;
        let resumed = job.link.call("kong.log.err", &[0x90]).expect("written");
        kong.read();
        drop(resumed);
        let reply = value(serve(&service, step(id, "x"), kong.route(4)));
        assert_eq!(reply, Ok(Encoded::Ret(id)));
        let out = reply_bytes(4, "plugin.Step", reply);
        let mut want = Vec::new();
        rpc::write_ok_prefix(&mut want, 4);
        rpc::write_ret(&mut want, id);
        assert_eq!(out, want);
    }

    #[test]
    fn unknown_events_and_instances_are_refused_in_kongs_words() {
        let service = service();
        let kong = Kong::new();
        let reply = value(serve(&service, step(99, "x"), kong.route(1)));
        assert_eq!(reply, Err(RpcError::UnknownEvent(99)));
        let call = Call::HandleEvent {
            instance: 42,
            phase: "access".into(),
        };
        let reply = value(serve(&service, call, kong.route(2)));
        assert_eq!(reply.map(drop), Err(RpcError::NoInstance(42)));
        let id = instance(&service, &kong);
        let call = Call::HandleEvent {
            instance: id,
            phase: "log".into(),
        };
        let reply = value(serve(&service, call, kong.route(3)));
        assert_eq!(
            reply.map(drop).map_err(|e| e.to_string()),
            Err("plugin p has no handler for phase 'log'".to_string())
        );
        let reply = value(serve(
            &service,
            Call::AbandonEvent { event: 5 },
            kong.route(4),
        ));
        assert_eq!(reply, Err(RpcError::UnknownEvent(5)));
    }

    #[test]
    fn a_replaced_server_passes_new_work_on_and_answers_its_own() {
        let service = service();
        let kong = Kong::new();
        let id = instance(&service, &kong);
        service.start_handing_over(Path::new("/run/newer.sock"));
        let call = Call::HandleEvent {
            instance: id,
            phase: "access".into(),
        };
        match serve(&service, call.clone(), kong.route(2)) {
            Outcome::Pass(pass) => {
                assert_eq!(pass.call, call);
                assert_eq!(
                    (pass.to.as_path(), pass.hop),
                    (Path::new("/run/newer.sock"), Hop::FromOlder)
                );
            }
            _ => panic!("not passed on"),
        }
        // Passed on to this server by an older one: the refusal sends it on.
        match service.serve(&service, call, Hop::FromOlder, kong.route(3)) {
            Outcome::Pass(pass) => assert_eq!(pass.otherwise, RpcError::HandedOver),
            _ => panic!("not passed on"),
        }
        assert!(matches!(
            value(serve(&service, Call::GetStatus, kong.route(4))),
            Ok(Encoded::Value(_))
        ));
    }

    #[test]
    fn a_server_that_replaced_one_passes_unknown_steps_back() {
        let service = service();
        let kong = Kong::new();
        service.set_predecessor("/run/older.sock".into());
        match serve(&service, step(7, "x"), kong.route(1)) {
            Outcome::Pass(pass) => {
                assert_eq!(pass.hop, Hop::FromNewer);
                assert_eq!(pass.call, step(7, "x"));
                assert_eq!(pass.otherwise, RpcError::UnknownEvent(7));
            }
            _ => panic!("not passed back"),
        }
        // From the older server itself: answered here.
        let reply = service.serve(&service, step(7, "x"), Hop::FromOlder, kong.route(2));
        assert_eq!(value(reply), Err(RpcError::UnknownEvent(7)));
    }

    #[test]
    fn a_draining_server_refuses_new_work() {
        let service = service();
        let kong = Kong::new();
        let id = instance(&service, &kong);
        service.start_draining();
        let call = Call::StartInstance {
            name: "p".into(),
            config: Value::Nil,
        };
        assert_eq!(
            value(serve(&service, call, kong.route(1))),
            Err(RpcError::ShuttingDown)
        );
        let call = Call::HandleEvent {
            instance: id,
            phase: "access".into(),
        };
        assert_eq!(
            value(serve(&service, call, kong.route(2))).map(drop),
            Err(RpcError::ShuttingDown)
        );
        assert!(matches!(
            value(serve(&service, Call::CloseInstance { id }, kong.route(3))),
            Ok(Encoded::Value(_))
        ));
    }
}
