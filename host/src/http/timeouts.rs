//! Closing connections that stall while sending a request.
//!
//! A client that opens a connection and sends nothing, half a request header, or headers and
//! part of a body, holds a file descriptor and memory for as long as the server lets it. Each
//! connection therefore has a deadline for the part of the request it is sending:
//!
//! - **headers**: from the connection's accept, or from the first byte of a request that follows
//!   an answer, until the request's headers are in (`header`);
//! - **body**: from the headers until the whole body is in (`body`), enforced by [`TimedBody`]
//!   on the body the handler reads, so that the handler can answer 408;
//! - **idle**: from an answer until the next request's first byte (`idle`): a keep-alive
//!   connection that a client polls on every 10 to 60 seconds stays open, one left unused is let
//!   go.
//!
//! While a request is being answered there is no deadline: a long-polling pull or an event
//! stream holds its connection for as long as the answer takes. What is written must be taken,
//! though: a client that reads nothing of an answer for `send` (its socket's buffers full, an
//! event stream nobody reads) has its connection closed.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long each part of a request may take to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers, from the connection's accept or the request's first byte.
    pub header: Duration,
    /// A request's body, from its headers.
    pub body: Duration,
    /// The wait for the next request on a keep-alive connection.
    pub idle: Duration,
    /// How long a write may wait for the client to take what was written before.
    pub send: Duration,
}

/// What a connection is doing, as far as its deadlines go.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Receiving a request's headers: closed at the deadline.
    Head(Instant),
    /// Waiting for the next request after an answer: closed at the deadline unless a byte comes.
    Idle(Instant),
    /// A request is being answered: no deadline.
    Busy,
}

/// The phase of one connection, shared by its reads ([`TimedIo`]) and its requests and answers
/// ([`Activity::request_started`], [`AnswerBody`]).
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
    timeouts: Timeouts,
}

impl Activity {
    /// A connection accepted now: its first request's headers are due within `timeouts.header`.
    pub fn new(timeouts: Timeouts) -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Head(Instant::now() + timeouts.header)),
            timeouts,
        })
    }

    /// A request's headers are in: its answer has no deadline.
    pub fn request_started(&self) {
        *self.phase.lock() = Phase::Busy;
    }

    /// The answer is written: the connection waits for its next request.
    fn answered(&self) {
        *self.phase.lock() = Phase::Idle(Instant::now() + self.timeouts.idle);
    }

    /// Bytes arrived: after an idle wait, they begin a request, whose headers are now due.
    fn bytes_arrived(&self) {
        let mut phase = self.phase.lock();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now() + self.timeouts.header);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.phase.lock() {
            Phase::Head(deadline) | Phase::Idle(deadline) => Some(deadline),
            Phase::Busy => None,
        }
    }
}

/// A connection's socket whose reads fail with [`io::ErrorKind::TimedOut`] once the
/// connection's deadline has passed with nothing to read: hyper then closes the connection.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Made at the first read that has to wait, then moved to each new deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// Made at the first write that has to wait; runs from the first write that waited since
    /// the last one that went through.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_waiting: bool,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> TimedIo<T> {
        TimedIo {
            inner,
            activity,
            timer: None,
            write_timer: None,
            write_waiting: false,
        }
    }

    /// A write's outcome, failed with [`io::ErrorKind::TimedOut`] once writes have waited for
    /// longer than the send timeout.
    fn after_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.write_waiting = false;
            return result;
        }
        let send = self.activity.timeouts.send;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + send)));
        if !self.write_waiting {
            self.write_waiting = true;
            timer.as_mut().reset(Instant::now() + send);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer in time",
            )));
        }
        Poll::Pending
    }

    /// Whether the deadline has passed; if not, the task is woken when it does.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.activity.deadline() else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent no complete request in time",
            ))),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body's read fails with when the body did not arrive in time. Handlers
/// answer it with 408 `request_timeout` (see `crate::http::body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimedOut {
    pub after: Duration,
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.after.as_secs_f64()
        )
    }
}

impl StdError for BodyTimedOut {}

impl BodyTimedOut {
    /// Whether `error`, or an error it was caused by, is a body that did not arrive in time.
    pub fn caused(error: &(dyn StdError + 'static)) -> Option<BodyTimedOut> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
                return Some(*timed_out);
            }
            next = error.source();
        }
        None
    }
}

/// A request body that must arrive whole by a deadline.
pub struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    after: Duration,
    /// Made when a read first has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    /// `inner`, due within `after` from now.
    pub fn new(inner: Incoming, after: Duration) -> TimedBody {
        TimedBody {
            inner,
            deadline: Instant::now() + after,
            after,
            timer: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyTimedOut { after: this.after }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that tells its connection, when hyper lets go of it (written, or the
/// connection is gone), that the connection now waits for its next request.
pub struct AnswerBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> AnswerBody<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> AnswerBody<B> {
        AnswerBody { inner, activity }
    }
}

impl<B> Drop for AnswerBody<B> {
    fn drop(&mut self) {
        self.activity.answered();
    }
}

impl<B: HttpBody + Unpin> HttpBody for AnswerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
