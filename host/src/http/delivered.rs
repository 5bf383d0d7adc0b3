//! Work that waits until an answer, or a part of one, has reached its connection.

use std::sync::Arc;

use parking_lot::Mutex;

pub(super) type Work = Box<dyn FnOnce() + Send>;

/// Work to do once an answer has been written out to its connection, not before: a handler
/// puts it in the response's extensions, and the server runs it when the answer's last byte
/// has been handed to the socket (see `timeouts::AnswerBody`). When the connection fails
/// first, the work is dropped undone.
#[derive(Clone)]
pub struct OnDelivered(Arc<Mutex<Option<Work>>>);

impl OnDelivered {
    pub fn new(work: impl FnOnce() + Send + 'static) -> OnDelivered {
        OnDelivered(Arc::new(Mutex::new(Some(Box::new(work)))))
    }

    /// The work, once.
    pub(super) fn take(&self) -> Option<Work> {
        self.0.lock().take()
    }
}

/// The same for each part of an answer that is sent as it is made (an event stream): the
/// handler's body adds work just before it gives out a part, and the server runs it once that
/// part has been handed to the socket. Work added for parts never written out is dropped
/// undone.
#[derive(Clone, Default)]
pub struct OnPartDelivered(Arc<Mutex<Vec<Work>>>);

impl OnPartDelivered {
    /// Work to run once the next part the body gives out has been written out.
    pub fn push(&self, work: impl FnOnce() + Send + 'static) {
        self.0.lock().push(Box::new(work));
    }

    /// The work added so far.
    pub(super) fn take(&self) -> Vec<Work> {
        std::mem::take(&mut *self.0.lock())
    }
}
