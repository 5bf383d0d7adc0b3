//! Work that waits until an answer has reached its connection.

use std::sync::Arc;

use parking_lot::Mutex;

type Work = Box<dyn FnOnce() + Send>;

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
