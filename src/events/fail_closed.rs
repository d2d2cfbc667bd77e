//! Failing an event closed, the way a Lua plugin that errors does.
//!
//! When an event's handler cannot give Kong a proper answer (it raised, it
//! ran past `--handler-timeout`, no thread could run it, its worker process
//! died), Kong still gets one: the reason goes to Kong's error log through
//! `kong.log.err`, then, where Kong can still respond (rewrite, access), the
//! request ends with a 500; elsewhere the event returns. An auth plugin that
//! fails must never let the request through.
//!
//! The sequence is written once, here: [`log_err`] answers the RPC in flight,
//! the event waits as [`Pending::FailClosed`], and the Step that answers the
//! log gets [`after_log`]. Every model walks it the same way, with nothing
//! running in between: the thread model, the bridge, the watchdog, the pool
//! and the worker-process relay through the event's link
//! (`EventLink::fail_closed`, the Step served by `dispatch.rs`), the looped
//! model through its event on the loop (`models/looped/event.rs`).

use std::time::Duration;

use crate::phase::Phase;
use crate::rpc;

/// One call of an event failing closed: Kong's method and its encoded args.
#[derive(Debug, PartialEq, Eq)]
pub struct ClosingCall {
    pub method: &'static str,
    pub args: Vec<u8>,
}

/// The first call: `kong.log.err(message)`.
pub fn log_err(message: &str) -> ClosingCall {
    let mut args = Vec::with_capacity(message.len() + 8);
    let _ = rmp::encode::write_array_len(&mut args, 1);
    rpc::write_str(&mut args, message);
    ClosingCall {
        method: "kong.log.err",
        args,
    }
}

/// What answers Kong's Step after the log: `kong.response.error(500)` where
/// Kong can still respond (a terminal call: the event ends), `None` (the
/// event returns, `"ret"`) elsewhere.
pub fn after_log(phase: Phase) -> Option<ClosingCall> {
    phase.can_respond().then(|| {
        let mut args = Vec::with_capacity(4);
        let _ = rmp::encode::write_array_len(&mut args, 1);
        let _ = rmp::encode::write_uint(&mut args, 500);
        ClosingCall {
            method: "kong.response.error",
            args,
        }
    })
}

/// What waits for Kong's Step on an event: the same two cases in every
/// model, whatever `H` (how a parked handler is resumed: a channel its
/// thread blocks on, or a loop's token) is.
pub enum Pending<H> {
    /// The handler's PDK call: Kong's answer resumes the handler.
    Handler(H),
    /// The `kong.log.err` of an event failing closed in `Phase`: its Step
    /// ends the event ([`after_log`]).
    FailClosed(Phase),
}

/// What Kong's Step does to a [`Pending`] call.
pub enum OnStep<H> {
    /// Resume the handler with Kong's answer.
    Resume(H),
    /// Answer the Step with this call, or with `"ret"` (`None`): the event
    /// ends.
    End(Option<ClosingCall>),
}

impl<H> Pending<H> {
    pub fn on_step(self) -> OnStep<H> {
        match self {
            Pending::Handler(handler) => OnStep::Resume(handler),
            Pending::FailClosed(phase) => OnStep::End(after_log(phase)),
        }
    }
}

/// What Kong's error log and ours say of a handler past `--handler-timeout`
/// (the thread model's watchdog, the looped model's loop).
pub fn timed_out_message(label: &str, limit: Duration) -> String {
    format!(
        "{label} handler timed out: it ran {:.1} s without answering Kong (--handler-timeout)",
        limit.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_carries_the_message_as_kongs_one_argument() {
        let call = log_err("p.access raised: boom");
        assert_eq!(call.method, "kong.log.err");
        let args = rmpv::decode::read_value(&mut call.args.as_slice()).expect("msgpack");
        assert_eq!(
            args,
            rmpv::Value::Array(vec!["p.access raised: boom".into()])
        );
    }

    #[test]
    fn a_phase_that_can_respond_ends_with_a_500_and_the_others_return() {
        let last = after_log(Phase::Access).expect("access can respond");
        assert_eq!(last.method, "kong.response.error");
        let args = rmpv::decode::read_value(&mut last.args.as_slice()).expect("msgpack");
        assert_eq!(args, rmpv::Value::Array(vec![500.into()]));
        assert_eq!(after_log(Phase::Log), None);
    }
}
