//! A TCP stream that holds its admission ticket: the connection counts
//! against its limit until the socket closes, also after an HTTP upgrade
//! hands it to a WebSocket. While its HTTP is served, it notes when a write
//! waits for the client ([`WriteWatch`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::admission::Ticket;

pub struct AdmittedStream {
    tcp: TcpStream,
    _ticket: Ticket,
    /// Until its [`WriteWatch`] is dropped.
    writes: Option<Arc<WriteStalls>>,
}

impl AdmittedStream {
    pub fn new(tcp: TcpStream, ticket: Ticket) -> Self {
        Self {
            tcp,
            _ticket: ticket,
            writes: None,
        }
    }

    /// Notes, until the returned watch is dropped, when a write has to wait
    /// for the client.
    pub fn watch_writes(&mut self) -> WriteWatch {
        let stalls = Arc::new(WriteStalls {
            started: Instant::now(),
            blocked_since_ms: AtomicU64::new(WRITING),
            blocked: AtomicWaker::new(),
            unwatched: AtomicBool::new(false),
        });
        self.writes = Some(stalls.clone());
        WriteWatch(stalls)
    }

    fn noted<T>(&mut self, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Some(stalls) = &self.writes {
            if stalls.unwatched.load(Ordering::Acquire) {
                self.writes = None;
            } else {
                stalls.wrote(written.is_pending());
            }
        }
        written
    }
}

/// Whether a write waits for the client, and since when.
struct WriteStalls {
    started: Instant,
    /// Milliseconds after `started` at which a write found the client's
    /// side full and no write went through since; [`WRITING`] otherwise.
    blocked_since_ms: AtomicU64,
    /// Woken as a write starts waiting.
    blocked: AtomicWaker,
    /// Its [`WriteWatch`] is gone: the stream lets go of it.
    unwatched: AtomicBool,
}

/// [`WriteStalls::blocked_since_ms`] when no write waits.
const WRITING: u64 = u64::MAX;

impl WriteStalls {
    /// A write went through, or has to wait (`blocked`). Reads the clock
    /// only as a write starts waiting.
    fn wrote(&self, blocked: bool) {
        let since = self.blocked_since_ms.load(Ordering::Acquire);
        if blocked && since == WRITING {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(WRITING - 1);
            self.blocked_since_ms.store(now, Ordering::Release);
            self.blocked.wake();
        } else if !blocked && since != WRITING {
            self.blocked_since_ms.store(WRITING, Ordering::Release);
        }
    }
}

/// What watches a stream's writes: dropped, the stream stops noting them
/// (an upgraded connection's WebSocket has a write timeout of its own) and
/// the waker of the task that watched is let go, whose memory it would
/// otherwise keep for as long as the connection lives.
pub struct WriteWatch(Arc<WriteStalls>);

impl WriteWatch {
    /// Completes once a write has waited for the client for `timeout`.
    pub async fn blocked_for(&self, timeout: Duration) {
        let stalls = &self.0;
        loop {
            let since = std::future::poll_fn(|cx| {
                stalls.blocked.register(cx.waker());
                match stalls.blocked_since_ms.load(Ordering::Acquire) {
                    WRITING => Poll::Pending,
                    since => Poll::Ready(since),
                }
            })
            .await;
            tokio::time::sleep_until(stalls.started + Duration::from_millis(since) + timeout).await;
            if stalls.blocked_since_ms.load(Ordering::Acquire) == since {
                return;
            }
        }
    }
}

impl Drop for WriteWatch {
    fn drop(&mut self) {
        self.0.unwatched.store(true, Ordering::Release);
        drop(self.0.blocked.take());
    }
}

impl AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.noted(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.noted(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
