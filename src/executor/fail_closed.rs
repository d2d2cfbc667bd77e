//! Failing an event closed, the way a Lua plugin that errors does.
//!
//! When an event's handler cannot give Kong a proper answer (it raised, it
//! ran past `--handler-timeout`, no thread could run it, its worker process
//! died), Kong still gets one: the reason goes to Kong's error log through
//! `kong.log.err`, then, where Kong can still respond (rewrite, access), the
//! request ends with a 500; elsewhere the event returns. An auth plugin that
//! fails must never let the request through.
//!
//! This is the one routine for it, run on the async runtime with no Python:
//! the thread model and the bridge hand it the event as soon as the handler
//! raised (so the handler's thread is free at once), the watchdog, the pool
//! and the worker-process relay when the handler cannot answer. The looped
//! model, which has no async runtime, runs the same two steps on its loop
//! (`looped/event.rs`, `fail_closed`).

use crate::events::EventLink;
use crate::phase::Phase;
use crate::rpc;

/// What Kong's error log and ours say of a handler past `--handler-timeout`
/// (the thread model's watchdog, the looped model's loop).
pub fn timed_out_message(label: &str, limit: std::time::Duration) -> String {
    format!(
        "{label} handler timed out: it ran {:.1} s without answering Kong (--handler-timeout)",
        limit.as_secs_f64()
    )
}

/// Runs [`fail_closed`] in the background.
pub fn spawn(runtime: &tokio::runtime::Handle, link: EventLink, phase: Phase, message: String) {
    runtime.spawn(async move { fail_closed(&link, phase, &message).await });
}

/// `kong.log.err(message)`, then `kong.response.error(500)` or `"ret"`.
pub async fn fail_closed(link: &EventLink, phase: Phase, message: &str) {
    let mut args = Vec::new();
    let _ = rmp::encode::write_array_len(&mut args, 1);
    rpc::write_str(&mut args, message);
    let Ok(answered) = link.call("kong.log.err", &args) else {
        return;
    };
    let Ok(resume) = answered.await else {
        // Kong abandoned the event meanwhile: nothing left to answer.
        return;
    };
    let _ = link.resume(resume);
    if phase.can_respond() {
        let mut args = Vec::new();
        let _ = rmp::encode::write_array_len(&mut args, 1);
        let _ = rmp::encode::write_uint(&mut args, 500);
        let _ = link.terminal("kong.response.error", &args);
    } else {
        let _ = link.done();
    }
}
