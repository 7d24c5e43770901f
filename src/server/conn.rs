//! One client connection's life: idle connections are closed, and a shutdown lets each
//! connection finish what it was sent (even a request still on its way) before closing it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// What the service tells the connection about its requests.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    started: AtomicUsize,
    first_request: Notify,
}

impl Activity {
    /// Counts a request until the returned guard drops (when its response is ready).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.started.fetch_add(1, Ordering::SeqCst) == 0 {
            self.first_request.notify_one();
        }
        InFlight(self.clone())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once a request has arrived on this connection.
    pub async fn first_request(&self) {
        if self.started.load(Ordering::SeqCst) == 0 {
            self.first_request.notified().await;
        }
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's transport that reads as closed once nothing has been read or written for
/// `idle` while no request is in flight: hyper then closes an HTTP/1.1 keep-alive or an
/// HTTP/2 connection as if the client had left. hyper has no idle timer of its own for
/// either (its header timeout only runs while a head is arriving).
pub struct IdleTimeout<T> {
    inner: T,
    activity: Arc<Activity>,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, activity: Arc<Activity>, idle: Duration) -> Self {
        Self {
            inner,
            activity,
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Whether the idle limit has passed; re-arms the timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let quiet_for = now.saturating_duration_since(self.last);
            if quiet_for >= self.idle && self.activity.in_flight() == 0 {
                return true;
            }
            let next = if quiet_for >= self.idle {
                now + self.idle
            } else {
                self.last + self.idle
            };
            self.timer.as_mut().reset(next);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last = Instant::now();
                }
                Poll::Ready(result)
            }
            // End of stream: nothing filled is what a closed peer looks like.
            Poll::Pending if self.expired(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.last = Instant::now();
        }
        written
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn reads_as_closed_after_the_idle_limit_but_not_while_a_request_runs() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = IdleTimeout::new(ours, activity.clone(), Duration::from_secs(30));
        theirs.write_all(b"GET").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.expect("read"), 3);
        let request = activity.request();
        let waited = tokio::time::timeout(Duration::from_secs(90), io.read(&mut buf)).await;
        assert!(waited.is_err(), "a request in flight keeps it open");
        drop(request);
        let started = tokio::time::Instant::now();
        assert_eq!(
            io.read(&mut buf).await.expect("read"),
            0,
            "closed when idle"
        );
        assert!(started.elapsed() <= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_it_open() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = IdleTimeout::new(ours, activity, Duration::from_secs(30));
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            theirs.write_all(b"x").await.expect("write");
            assert_eq!(io.read(&mut buf).await.expect("read"), 1);
        }
        let started = tokio::time::Instant::now();
        assert_eq!(io.read(&mut buf).await.expect("read"), 0);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
