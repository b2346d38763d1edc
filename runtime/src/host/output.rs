//! Guest stdout/stderr → `tracing` events tagged with the function and invocation id.
//!
//! Lines are buffered per stream and emitted whole; a line longer than [`MAX_LINE`] is cut so a
//! guest printing without newlines cannot grow host memory. The last [`TAIL_BYTES`] of stderr are
//! kept so a trap's error can say what the guest printed before it died (a Rust panic message).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line emitted as one event.
const MAX_LINE: usize = 8 * 1024;
/// How much of stderr is kept for error messages.
const TAIL_BYTES: usize = 2 * 1024;

/// Which stream a [`GuestOutput`] captures.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A guest output stream that logs lines.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    function: Arc<str>,
    invocation: Arc<str>,
    stream: Stream,
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl GuestOutput {
    pub(crate) fn new(function: Arc<str>, invocation: Arc<str>, stream: Stream) -> Self {
        Self {
            function,
            invocation,
            stream,
            tail: Arc::default(),
        }
    }

    /// The last bytes written (stderr tail), as text.
    pub(crate) fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = tail.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            out: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (function, invocation) = (&*self.out.function, &*self.out.invocation);
        match self.out.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", function, invocation, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", function, invocation, stream = "stderr", "{text}")
            }
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if matches!(self.out.stream, Stream::Stderr) {
            let mut tail = self.out.tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.extend(buf.iter().copied());
            let excess = tail.len().saturating_sub(TAIL_BYTES);
            tail.drain(..excess);
        }
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
