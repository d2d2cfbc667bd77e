//! The errors a `plugin.*` request is answered with, and the words Kong sees
//! for each, in one place.
//!
//! Kong reacts to one wording: an error containing `no plugin instance` makes
//! it forget its cached instance id and start the instance again
//! (docs/protocol.md §7.1). The others are for people reading Kong's log.

use std::fmt;

use crate::rpc::CallError;

#[derive(Debug, PartialEq, Eq)]
pub enum RpcError {
    /// The instance id is unknown (closed, expired, or from before a
    /// restart): Kong starts the instance again.
    NoInstance(u64),
    /// The server is draining after SIGTERM: no new instance or event.
    ShuttingDown,
    /// The server is draining because a newer one took its socket path: the
    /// connection passes the request on to it (`handover.rs`) rather than
    /// answering with this.
    HandedOver,
    /// The plugin refused the config: the reason as the plugin gave it.
    InstanceRefused(String),
    /// A Step or AbandonEvent for an event that has ended.
    UnknownEvent(u64),
    /// The request's method or arguments are wrong (`rpc.rs`).
    Call(CallError),
    /// Anything else the request got wrong: its arguments, its method, the
    /// plugin it names.
    Invalid(String),
}

const REFUSED: &str = "starting instance: ";

impl RpcError {
    /// How loud the log line about it is: Kong recovers from these on its
    /// own, so they are news, not warnings.
    pub fn log_level(&self) -> log::Level {
        match self {
            RpcError::NoInstance(_) | RpcError::ShuttingDown | RpcError::HandedOver => {
                log::Level::Info
            }
            _ => log::Level::Warn,
        }
    }

    /// Whether an error text from another server (a worker process) is
    /// this kind of error. Kong itself matches `no plugin instance` anywhere
    /// in the text, case-insensitively; so do we.
    pub fn names(&self, text: &str) -> bool {
        let wording = match self {
            RpcError::NoInstance(_) => "no plugin instance",
            RpcError::ShuttingDown => "shutting down",
            _ => return false,
        };
        text.to_ascii_lowercase().contains(wording)
    }

    /// The plugin's reason inside a refusal that another server of ours
    /// wrote (a worker process): so that it is not prefixed twice.
    pub fn refusal_reason(text: &str) -> &str {
        text.strip_prefix(REFUSED).unwrap_or(text)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::NoInstance(id) => write!(f, "no plugin instance #{id}"),
            RpcError::ShuttingDown => f.write_str("plugin server is shutting down"),
            RpcError::HandedOver => f.write_str("plugin server was replaced by a newer one"),
            RpcError::InstanceRefused(reason) => write!(f, "{REFUSED}{reason}"),
            RpcError::UnknownEvent(id) => {
                write!(f, "event id {id} not found (it has ended or was abandoned)")
            }
            RpcError::Call(e) => e.fmt(f),
            RpcError::Invalid(why) => f.write_str(why),
        }
    }
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> Self {
        RpcError::Call(e)
    }
}

impl From<String> for RpcError {
    fn from(why: String) -> Self {
        RpcError::Invalid(why)
    }
}

impl From<&str> for RpcError {
    fn from(why: &str) -> Self {
        RpcError::Invalid(why.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_recovers_from_the_no_instance_wording() {
        assert_eq!(RpcError::NoInstance(7).to_string(), "no plugin instance #7");
        assert_eq!(RpcError::NoInstance(7).log_level(), log::Level::Info);
    }

    #[test]
    fn relayed_texts_are_recognised() {
        let text = RpcError::NoInstance(3).to_string();
        assert!(RpcError::NoInstance(0).names(&text));
        assert!(RpcError::ShuttingDown.names(&RpcError::ShuttingDown.to_string()));
        assert!(!RpcError::ShuttingDown.names(&text));
    }

    #[test]
    fn a_relayed_refusal_is_not_prefixed_twice() {
        let relayed = RpcError::InstanceRefused("bad key".into()).to_string();
        assert_eq!(
            RpcError::InstanceRefused(RpcError::refusal_reason(&relayed).into()).to_string(),
            "starting instance: bad key"
        );
    }
}
