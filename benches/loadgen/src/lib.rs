//! Shared pieces of the benchmark harness: the wire codec (Kong-flavoured
//! MessagePack-RPC over a Unix stream socket), the scenario table both
//! binaries agree on, and small `/proc` readers.
//!
//! Written from the protocol description in `shared/reference/protocol.md`
//! (sections 2-5): requests are `[0, msgid, method, [params]]`, responses
//! `[1, msgid, error, result]`, optional notifications `[2, label, args]`
//! may precede a response, and there is no length prefix.

pub mod proc;
pub mod scenario;
pub mod wire;
