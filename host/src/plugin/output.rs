//! Where a plugin's stdout and stderr go: a bounded buffer per instance, drained into the host
//! log after each call, prefixed with the plugin's name and rate-limited. Writes never fail, so a
//! plugin that floods its output is slowed by nothing and loses only the excess.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per call and stream; the rest is counted and dropped.
const CAPACITY: usize = 16 * 1024;

#[derive(Clone)]
pub struct OutputSink {
    state: Arc<Mutex<SinkState>>,
}

#[derive(Default)]
struct SinkState {
    buffer: Vec<u8>,
    dropped: usize,
}

impl OutputSink {
    pub fn new() -> OutputSink {
        OutputSink {
            state: Arc::new(Mutex::new(SinkState::default())),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.state.lock();
        let room = CAPACITY.saturating_sub(state.buffer.len());
        let kept = bytes.len().min(room);
        state.buffer.extend_from_slice(&bytes[..kept]);
        state.dropped += bytes.len() - kept;
    }

    /// What was written since the last call, and how many bytes were dropped.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut state = self.state.lock();
        let dropped = std::mem::take(&mut state.dropped);
        (std::mem::take(&mut state.buffer), dropped)
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for OutputSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Lines a plugin may put in the host log per second; the rest are counted.
const LINES_PER_SECOND: u32 = 20;

/// Forwards a plugin's output to the host log, at most [`LINES_PER_SECOND`] lines a second.
pub struct LogForwarder {
    plugin: String,
    window: Mutex<(Instant, u32, u64)>,
}

impl LogForwarder {
    pub fn new(plugin: String) -> LogForwarder {
        LogForwarder {
            plugin,
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    pub fn forward(&self, stream: &str, (bytes, dropped): (Vec<u8>, usize)) {
        if bytes.is_empty() && dropped == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut window = self.window.lock();
        let (started, logged, suppressed) = &mut *window;
        if started.elapsed().as_secs() >= 1 {
            if *suppressed > 0 {
                tracing::warn!(plugin = %self.plugin, lines = *suppressed, "plugin output suppressed (rate limit)");
            }
            *started = Instant::now();
            *logged = 0;
            *suppressed = 0;
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if *logged < LINES_PER_SECOND {
                *logged += 1;
                tracing::info!(plugin = %self.plugin, stream, "{line}");
            } else {
                *suppressed += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(plugin = %self.plugin, stream, bytes = dropped, "plugin output over the per-call cap was dropped");
        }
    }
}
