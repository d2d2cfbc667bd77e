//! Where the reply to the RPC in flight goes, and the connection's reading
//! lent to the event's handler meanwhile.

use std::sync::Arc;

use tokio::sync::oneshot;

use std::any::Any;

use crate::rpc::Request;
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
/// In the thread model the thread that runs a handler reads the connection
/// that carried the event's last RPC itself: while it waits for Kong's next
/// Step (with Kong's keep-alive pool it usually comes on that connection),
/// and after the handler returned, for the next event (`models/threads/linger.rs`).
/// The HandleEvents and Steps that come meanwhile are served on that thread
/// ([`ServeLent`]); anything else makes it give the connection back, bytes
/// intact, to its I/O task, which waits meanwhile. Dropping a `Lend` gives it
/// back.
pub struct Lend {
    pub(super) decoder: Option<FrameDecoder>,
    give_back: Option<oneshot::Sender<FrameDecoder>>,
    pub(super) server: Arc<dyn ServeLent>,
}

/// Serves a request that came on a lent connection, on the thread that
/// holds it (implemented by the service).
pub trait ServeLent: Send + Sync {
    /// Whether the thread holding the connection may serve `req`: a
    /// HandleEvent or Step of this server. Everything else goes back to the
    /// connection's I/O task.
    fn takes(&self, req: &Request) -> bool;

    /// Serves `req`, which [`takes`](ServeLent::takes) accepted and which is
    /// already consumed from the lend's bytes. The event a HandleEvent
    /// starts is put in `here` when the calling thread may run it itself.
    fn serve_lent(
        &self,
        req: Request,
        writer: &Arc<ConnWriter>,
        lend: Lend,
        here: Here<'_>,
    ) -> Served;
}

/// Where a thread that may run a new event itself wants it: a slot of the
/// server's job type (`Option<executor::EventJob>`), filled by
/// [`ServeLent::serve_lent`] and read back by the caller. The slot's type is
/// erased because this module sits below the job's (the job holds an
/// `EventLink`, which holds a `Route`); nothing is allocated for it.
pub struct Here<'a>(Option<&'a mut dyn Any>);

impl<'a> Here<'a> {
    /// The calling thread is busy: a new event runs elsewhere.
    pub fn nowhere() -> Here<'static> {
        Here(None)
    }

    /// The calling thread runs the new event put in `slot`.
    pub fn slot<J: 'static>(slot: &'a mut Option<J>) -> Here<'a> {
        Here(Some(slot))
    }

    /// The slot, when the caller passed one of type `Option<J>`.
    pub fn take<J: 'static>(self) -> Option<&'a mut Option<J>> {
        self.0.and_then(|slot| slot.downcast_mut())
    }
}

/// What became of a lent connection after a request was served on it.
pub enum Served {
    /// Answered here (an error, or nothing whole to serve yet): the caller
    /// keeps reading.
    Kept(Lend),
    /// The request started or resumed an event, which took the connection's
    /// reading with it.
    Passed,
    /// The connection's I/O task serves the next request: give it back.
    GiveBack(Lend),
}

impl Lend {
    pub fn new(
        decoder: FrameDecoder,
        server: Arc<dyn ServeLent>,
    ) -> (Lend, oneshot::Receiver<FrameDecoder>) {
        let (give_back, returned) = oneshot::channel();
        (
            Lend {
                decoder: Some(decoder),
                give_back: Some(give_back),
                server,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes nothing, serves nothing.
    struct Nobody;

    impl ServeLent for Nobody {
        fn takes(&self, _req: &Request) -> bool {
            false
        }

        fn serve_lent(
            &self,
            _req: Request,
            _writer: &Arc<ConnWriter>,
            lend: Lend,
            _here: Here<'_>,
        ) -> Served {
            Served::GiveBack(lend)
        }
    }

    #[test]
    fn dropping_a_lend_gives_the_bytes_back_intact() {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&[0x94, 0x00, 0x01]);
        let (lend, mut returned) = Lend::new(decoder, Arc::new(Nobody));
        assert!(matches!(
            returned.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        drop(lend);
        let mut back = returned.try_recv().expect("given back on drop");
        // The unfinished frame is still there, and completes.
        back.extend(&[0xa1, b'm', 0x90]);
        let frame = back.next_frame().expect("frame").expect("whole");
        assert_eq!(frame[2].as_str(), Some("m"));
    }

    #[test]
    fn a_lend_whose_task_is_gone_drops_quietly() {
        let (lend, returned) = Lend::new(FrameDecoder::new(1 << 20), Arc::new(Nobody));
        drop(returned);
        drop(lend);
    }

    #[test]
    fn here_hands_a_job_only_to_a_slot_of_its_type() {
        let mut slot: Option<u32> = None;
        if let Some(s) = Here::slot(&mut slot).take::<u32>() {
            *s = Some(7);
        }
        assert_eq!(slot, Some(7));
        // Another job type: no slot, the event runs elsewhere.
        let mut slot: Option<u32> = None;
        assert!(Here::slot(&mut slot).take::<String>().is_none());
        assert!(Here::nowhere().take::<u32>().is_none());
    }
}
