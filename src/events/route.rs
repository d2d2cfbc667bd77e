//! Where the reply to the RPC in flight goes, and the connection's reading
//! lent to the event's handler meanwhile.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::wire::FrameDecoder;
use crate::writer::ConnWriter;

/// Where the reply to the RPC in flight goes.
pub struct Route {
    pub writer: Arc<ConnWriter>,
    pub msgid: u64,
    /// The connection's reading, lent by its I/O task until the reply is
    /// written (or longer, see [`Lend`]).
    pub lend: Option<Lend>,
}

/// A connection's reading, lent to an event's handler.
///
/// While a thread-model handler waits for Kong's next Step it reads the
/// connection that carried its last RPC itself: with Kong's keep-alive pool
/// the next Step usually comes on that same connection, and answering it on
/// the handler's own thread saves two thread wake-ups per PDK call. Anything
/// else that arrives (another event's RPC) makes the handler give the
/// connection back, bytes intact, to its I/O task, which waits meanwhile.
/// Dropping a `Lend` gives it back.
pub struct Lend {
    pub(super) decoder: Option<FrameDecoder>,
    give_back: Option<oneshot::Sender<FrameDecoder>>,
}

impl Lend {
    pub fn new(decoder: FrameDecoder) -> (Lend, oneshot::Receiver<FrameDecoder>) {
        let (give_back, returned) = oneshot::channel();
        (
            Lend {
                decoder: Some(decoder),
                give_back: Some(give_back),
            },
            returned,
        )
    }
}

impl Drop for Lend {
    fn drop(&mut self) {
        if let (Some(tx), Some(decoder)) = (self.give_back.take(), self.decoder.take()) {
            let _ = tx.send(decoder);
        }
    }
}
