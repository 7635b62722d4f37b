//! A stream that reports its traffic: how the upstream client tells a reused connection
//! that failed before any answer (retried once) and how a WebSocket tunnel marks its
//! workspace as used.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a [`Watched`] stream tells of its traffic.
pub(super) trait Traffic {
    /// Bytes were read.
    fn read(&self);
    /// A write is about to be attempted; called before it, so one that fails counts too.
    fn writing(&self);
}

/// `inner`, reporting its reads and writes to `traffic`.
pub(super) struct Watched<T, W> {
    pub inner: T,
    pub traffic: W,
}

impl<T: AsyncRead + Unpin, W: Traffic + Unpin> AsyncRead for Watched<T, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.traffic.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin, W: Traffic + Unpin> AsyncWrite for Watched<T, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.traffic.writing();
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.traffic.writing();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Counts {
        reads: AtomicUsize,
        writes: AtomicUsize,
    }

    impl Traffic for &Counts {
        fn read(&self) {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        fn writing(&self) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn reads_that_bring_bytes_and_every_write_attempt_are_reported() {
        let counts = Counts::default();
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watched {
            inner: near,
            traffic: &counts,
        };
        watched.write_all(b"ping").await.unwrap();
        far.write_all(b"pong").await.unwrap();
        drop(far);
        let mut answer = Vec::new();
        watched.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
        assert_eq!(counts.writes.load(Ordering::Relaxed), 1);
        // The read at end of stream brought no bytes and is not traffic.
        assert_eq!(counts.reads.load(Ordering::Relaxed), 1);
    }
}
