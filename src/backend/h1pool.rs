//! Keep-alive HTTP/1.1 connections to plain-HTTP backends, idle ones kept per worker thread.
//!
//! hyper's pooled client serves every other backend (HTTPS, HTTP/2). For plain HTTP, the
//! usual case of a self-hosted SFU beside the gateway, its pool was a tenth of an upstream
//! exchange's instructions: a mutex, a SipHash map keyed by scheme and authority, a checkout
//! future, and a task to return each connection. Here a worker takes the newest idle
//! connection to the same authority from its own list, and puts it back once the answer has
//! been read whole. A connection is never shared between threads, so nothing is locked.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use thread_local::ThreadLocal;
use tower::Service;

use super::UpstreamError;

pub struct Http1Pool {
    idle: ThreadLocal<RefCell<Vec<Idle>>>,
    connector: HttpConnector,
    idle_timeout: Duration,
    /// Idle connections one worker keeps, all backends together; beyond it the oldest is
    /// closed. A burst of concurrent exchanges opens as many connections as it needs; this
    /// only bounds what stays open after it. Zero: every connection closes after its answer.
    max_idle: usize,
}

struct Idle {
    authority: Box<str>,
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection in use; handed back with [`Http1Pool::release`] once its answer is read.
pub struct Lease {
    authority: Box<str>,
    sender: SendRequest<Full<Bytes>>,
}

impl Http1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        Self {
            idle: ThreadLocal::new(),
            connector,
            idle_timeout,
            max_idle,
        }
    }

    /// Sends `request` (origin-form URI, `Host` set) to `authority`, on an idle connection
    /// when this worker has one. A request the connection closed under before it was written
    /// is sent again on the next one, as hyper's pooled client does; one already written is
    /// not (the backend may have acted on it).
    pub async fn send(
        &self,
        authority: &str,
        connect_uri: impl FnOnce() -> Option<Uri>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        while let Some(mut sender) = self.checkout(authority) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(authority, sender))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Broken),
                },
            }
        }
        let uri = connect_uri()
            .ok_or_else(|| UpstreamError::Protocol("backend URL is not a valid URI".into()))?;
        let mut sender = self.connect(uri).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| UpstreamError::Broken)?;
        Ok((response, self.lease(authority, sender)))
    }

    /// Keeps a connection whose answer was read whole for this worker's next exchange, and
    /// closes idle ones past the timeout (checked here, so a quiet worker reads no clock).
    pub fn release(&self, lease: Lease) {
        if lease.sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.get_or_default().borrow_mut();
        let expired = idle
            .iter()
            .take_while(|c| now.saturating_duration_since(c.since) >= self.idle_timeout)
            .count();
        // With max_idle >= 1 (zero returned above) both counts are at most idle.len().
        let over = (idle.len() + 1).saturating_sub(self.max_idle);
        idle.drain(..expired.max(over));
        idle.push(Idle {
            authority: lease.authority,
            sender: lease.sender,
            since: now,
        });
    }

    fn lease(&self, authority: &str, sender: SendRequest<Full<Bytes>>) -> Lease {
        Lease {
            authority: authority.into(),
            sender,
        }
    }

    /// The newest idle connection to `authority` that is still open.
    fn checkout(&self, authority: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.get_or_default().borrow_mut();
        while let Some(at) = idle.iter().rposition(|c| &*c.authority == authority) {
            let found = idle.remove(at);
            if !found.sender.is_closed() {
                return Some(found.sender);
            }
        }
        None
    }

    async fn connect(&self, uri: Uri) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| UpstreamError::Connect(super::client::innermost_reason(&e)))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(super::client::innermost_reason(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "backend connection ended");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers every request on a connection with a fixed 200, counting the
    /// connections it accepted; it closes a connection after `per_connection` answers.
    async fn backend(
        per_connection: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut pending = Vec::new();
                    let mut answered = 0;
                    while answered < per_connection {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            answered += 1;
                            let close = if answered == per_connection {
                                "Connection: close\r\n"
                            } else {
                                ""
                            };
                            let reply =
                                format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 2\r\n\r\nok");
                            if socket.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn request(authority: &str) -> Request<Full<Bytes>> {
        Request::get("/x")
            .header(http::header::HOST, authority)
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    async fn exchange(pool: &Http1Pool, authority: &str) -> Result<Bytes, UpstreamError> {
        let uri = format!("http://{authority}/x");
        let (response, lease) = pool
            .send(authority, || uri.parse().ok(), request(authority))
            .await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| UpstreamError::Broken)?;
        pool.release(lease);
        Ok(body.to_bytes())
    }

    #[tokio::test]
    async fn sequential_exchanges_share_one_connection() {
        let (authority, accepted) = backend(usize::MAX).await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(90), 128);
        for _ in 0..5 {
            assert_eq!(
                exchange(&pool, &authority).await,
                Ok(Bytes::from_static(b"ok"))
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced_not_reported() {
        let (authority, accepted) = backend(1).await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(90), 128);
        for _ in 0..3 {
            assert_eq!(
                exchange(&pool, &authority).await,
                Ok(Bytes::from_static(b"ok"))
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_on_the_next_release() {
        let (authority, _) = backend(usize::MAX).await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::ZERO, 128);
        let uri = format!("http://{authority}/x");
        let mut leases = Vec::new();
        for _ in 0..2 {
            let (response, lease) = pool
                .send(&authority, || uri.parse().ok(), request(&authority))
                .await
                .expect("exchange");
            response.into_body().collect().await.expect("body");
            leases.push(lease);
        }
        for lease in leases {
            pool.release(lease);
        }
        assert_eq!(pool.idle.get_or_default().borrow().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(90), 128);
        assert!(matches!(
            exchange(&pool, &authority).await,
            Err(UpstreamError::Connect(_))
        ));
    }

    /// Opens `count` connections at once (each lease held until all are open), then hands
    /// them all back, and says how many the worker kept.
    async fn kept_after_a_burst(pool: &Http1Pool, authority: &str, count: usize) -> usize {
        let mut leases = Vec::new();
        for _ in 0..count {
            let uri = format!("http://{authority}/x");
            let (response, lease) = pool
                .send(authority, || uri.parse().ok(), request(authority))
                .await
                .expect("exchange");
            response.into_body().collect().await.expect("body");
            leases.push(lease);
        }
        for lease in leases {
            pool.release(lease);
        }
        let kept = pool.idle.get_or_default().borrow().len();
        kept
    }

    #[tokio::test]
    async fn the_idle_list_is_bounded() {
        let (authority, _) = backend(usize::MAX).await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(90), 8);
        assert_eq!(kept_after_a_burst(&pool, &authority, 11).await, 8);
    }

    #[tokio::test]
    async fn no_idle_connections_are_kept_when_the_bound_is_zero() {
        let (authority, accepted) = backend(usize::MAX).await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(90), 0);
        assert_eq!(kept_after_a_burst(&pool, &authority, 3).await, 0);
        assert_eq!(
            exchange(&pool, &authority).await,
            Ok(Bytes::from_static(b"ok"))
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
