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
//! - **idle**: from the moment an answer has been written out until the next request's first
//!   byte (`idle`): a keep-alive connection that a client polls on every 10 to 60 seconds stays
//!   open, one left unused is let go.
//!
//! [`Expiry`] watches the header and idle deadlines beside the connection, which is dropped
//! when one passes: it does not depend on when hyper happens to read.
//!
//! While a request is being answered there is no deadline: a long-polling pull or an event
//! stream holds its connection for as long as the answer takes. What is written must be taken,
//! though: a client that reads nothing of an answer for `send` (its socket's buffers full, an
//! event stream nobody reads) has its connection closed.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::delivered::Work;

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

/// A sleep made the first time it is needed, then moved to each new deadline: one allocation
/// per connection or body, however often the deadline moves.
#[derive(Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Ready once `deadline` has passed; until then the task is woken when it does.
    fn poll_at(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

/// What a connection is doing, as far as its deadlines go.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Receiving a request's headers: closed at the deadline.
    Head(Instant),
    /// Waiting for the next request after an answer: closed at the deadline unless a byte comes.
    Idle(Instant),
    /// A request is being answered: no deadline. `buffered` once hyper holds the whole answer
    /// (its body is done); the connection is idle once that has been written out.
    Busy { buffered: bool },
}

struct State {
    phase: Phase,
    /// The connection's [`Expiry`], woken when the deadline moves.
    expiry: Option<Waker>,
    /// What to do once the answer hyper holds has been written out.
    on_flushed: Option<Work>,
    /// What to do once the parts of an answer hyper holds have been written out, whole
    /// answer or not (see [`super::OnPartDelivered`]).
    on_parts_flushed: Vec<Work>,
}

/// The phase of one connection, shared by its socket ([`TimedIo`]), its requests and answers
/// ([`Activity::request_started`], [`AnswerBody`]) and the watch on its deadline ([`Expiry`]).
pub struct Activity {
    state: Mutex<State>,
    timeouts: Timeouts,
}

impl Activity {
    /// A connection accepted now: its first request's headers are due within `timeouts.header`.
    pub fn new(timeouts: Timeouts) -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now() + timeouts.header),
                expiry: None,
                on_flushed: None,
                on_parts_flushed: Vec::new(),
            }),
            timeouts,
        })
    }

    /// A request's headers are in: its answer has no deadline.
    pub fn request_started(&self) {
        let mut state = self.state.lock();
        state.phase = Phase::Busy { buffered: false };
        state.on_flushed = None;
        state.on_parts_flushed.clear();
    }

    /// hyper holds a part of the answer; `work` is done once it has been written out.
    fn part_buffered(&self, work: Vec<Work>) {
        let mut state = self.state.lock();
        if let Phase::Busy { .. } = state.phase {
            state.on_parts_flushed.extend(work);
        }
    }

    /// hyper holds the whole answer; what is left is writing it out, then `on_flushed`.
    fn answer_buffered(&self, on_flushed: Option<Work>) {
        let mut state = self.state.lock();
        if let Phase::Busy { .. } = state.phase {
            state.phase = Phase::Busy { buffered: true };
            state.on_flushed = on_flushed;
        }
    }

    /// Everything hyper had to write is written: after a whole answer, its work is done and
    /// the connection waits for its next request.
    fn flushed(&self) {
        let (parts, work) = {
            let mut state = self.state.lock();
            let parts = std::mem::take(&mut state.on_parts_flushed);
            if !matches!(state.phase, Phase::Busy { buffered: true }) {
                (parts, None)
            } else {
                state.phase = Phase::Idle(Instant::now() + self.timeouts.idle);
                if let Some(expiry) = &state.expiry {
                    expiry.wake_by_ref();
                }
                (parts, state.on_flushed.take())
            }
        };
        for part in parts {
            part();
        }
        if let Some(work) = work {
            work();
        }
    }

    /// Bytes arrived: after an idle wait, they begin a request, whose headers are now due.
    fn bytes_arrived(&self) {
        let mut state = self.state.lock();
        if let Phase::Idle(_) = state.phase {
            state.phase = Phase::Head(Instant::now() + self.timeouts.header);
            if let Some(expiry) = &state.expiry {
                expiry.wake_by_ref();
            }
        }
    }

    /// The deadline now, and `waker` to wake when it moves.
    fn deadline(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.state.lock();
        if !state.expiry.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.expiry = Some(waker.clone());
        }
        match state.phase {
            Phase::Head(deadline) | Phase::Idle(deadline) => Some(deadline),
            Phase::Busy { .. } => None,
        }
    }
}

/// Resolves once the connection's deadline has passed: it has stalled, and is to be closed.
/// It follows the deadline as the connection moves from phase to phase.
pub struct Expiry {
    activity: Arc<Activity>,
    timer: Timer,
}

impl Expiry {
    pub fn new(activity: Arc<Activity>) -> Expiry {
        Expiry {
            activity,
            timer: Timer::default(),
        }
    }
}

impl Future for Expiry {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.activity.deadline(cx.waker()) {
            Some(deadline) => this.timer.poll_at(deadline, cx),
            None => Poll::Pending,
        }
    }
}

/// A connection's socket, which tells its [`Activity`] when bytes arrive and when everything
/// written has gone out, and fails writes with [`io::ErrorKind::TimedOut`] once they have
/// waited for the client longer than the send timeout.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// While writes wait: when the client must have taken something, counted from the first
    /// write that waited since the last one that went through.
    write_deadline: Option<Instant>,
    write_timer: Timer,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> TimedIo<T> {
        TimedIo {
            inner,
            activity,
            write_deadline: None,
            write_timer: Timer::default(),
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
            self.write_deadline = None;
            return result;
        }
        let send = self.activity.timeouts.send;
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + send);
        if self.write_timer.poll_at(deadline, cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer in time",
            )));
        }
        Poll::Pending
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
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            this.activity.bytes_arrived();
        }
        result
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
        // hyper flushes its socket once its own buffer is written out.
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            this.activity.flushed();
        }
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
    timer: Timer,
}

impl TimedBody {
    /// `inner`, due within `after` from now.
    pub fn new(inner: Incoming, after: Duration) -> TimedBody {
        TimedBody {
            inner,
            deadline: Instant::now() + after,
            after,
            timer: Timer::default(),
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
            Poll::Pending => match this.timer.poll_at(this.deadline, cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut { after: this.after }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that tells its connection, when hyper lets go of it (all of it is in
/// hyper's buffer, or the connection is gone), that only writing the answer out is left, and
/// what to do once it is ([`super::OnDelivered`]): only when the body was given out whole.
pub struct AnswerBody<B: HttpBody> {
    inner: B,
    activity: Arc<Activity>,
    on_delivered: Option<Work>,
    on_part_delivered: Option<super::OnPartDelivered>,
    ended: bool,
}

impl<B: HttpBody> AnswerBody<B> {
    pub fn new(
        inner: B,
        activity: Arc<Activity>,
        on_delivered: Option<super::OnDelivered>,
        on_part_delivered: Option<super::OnPartDelivered>,
    ) -> AnswerBody<B> {
        AnswerBody {
            inner,
            activity,
            on_delivered: on_delivered.and_then(|d| d.take()),
            on_part_delivered,
            ended: false,
        }
    }
}

impl<B: HttpBody> Drop for AnswerBody<B> {
    fn drop(&mut self) {
        // hyper stops at the end of the stream, or at `is_end_stream`; anything else is an
        // answer cut short, whose work is dropped undone.
        let whole = self.ended || self.inner.is_end_stream();
        let work = if whole {
            self.on_delivered.take()
        } else {
            None
        };
        self.activity.answer_buffered(work);
    }
}

impl<B: HttpBody + Unpin> HttpBody for AnswerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(parts) = &this.on_part_delivered {
                    this.activity.part_buffered(parts.take());
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
