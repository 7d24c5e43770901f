//! The pooled upstream HTTP client: HTTP/1.1 and HTTP/2, HTTPS through rustls (ring, system
//! roots), 307/308 followed inside the gateway with method, body and credential kept.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

use super::h1pool::Http1Pool;
use super::{AllowedHost, BackendDef, BackendUrl};

/// Limits of the upstream client, from `[server]`.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Bound on one whole exchange with a backend, redirects included.
    pub request_timeout: Duration,
    pub max_redirects: usize,
    pub max_response_bytes: usize,
    /// How long a keep-alive connection to a backend stays open unused.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections one worker keeps: all plain-HTTP backends together, and
    /// per host for the others.
    pub max_idle: usize,
    /// Trusted besides the system's roots.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Each thread gets its own pool, so that a request and the connection task serving it run
/// on the same event loop: with one shared pool a connection opened by one worker thread is
/// checked out by another, and every exchange then costs two cross-thread wake-ups.
#[derive(Clone)]
pub struct UpstreamClient {
    pools: Arc<thread_local::ThreadLocal<PooledClient>>,
    /// Plain-HTTP backends' connections, kept apart from hyper's pool (see `h1pool`).
    plain: Arc<Http1Pool>,
    connector: HttpsConnector<HttpConnector>,
    settings: ClientSettings,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A backend's answer after redirects, with the URL that finally answered.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub url: BackendUrl,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unreachable, TLS failure: nothing reached the backend's application.
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    /// The connection broke after the request was sent, before a whole answer came.
    #[error("connection to backend failed mid-exchange")]
    Broken,
    #[error("{0}")]
    Redirect(String),
    #[error("{0}")]
    Protocol(String),
}

impl UpstreamClient {
    pub fn new(
        settings: ClientSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // One unparsable system certificate must not take every other root with it.
            let _ = roots.add(cert);
        }
        for cert in &settings.extra_roots {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            pools: Arc::new(thread_local::ThreadLocal::new()),
            plain: Arc::new(Http1Pool::new(
                settings.connect_timeout,
                settings.idle_timeout,
                settings.max_idle,
            )),
            connector: https,
            settings,
            metrics,
        })
    }

    fn pool(&self) -> &PooledClient {
        self.pools.get_or(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.settings.idle_timeout)
                .pool_max_idle_per_host(self.settings.max_idle)
                .build(self.connector.clone())
        })
    }

    /// Sends one request to `backend`, following 307/308 to hosts the backend allows (and
    /// to `extra`, a host the vendor's own API handed out for this session). `headers` makes
    /// each attempt's headers: a map kept for a redirect that almost never comes was a copy
    /// of it on every exchange.
    pub async fn send(
        &self,
        backend: &BackendDef,
        extra: Option<&AllowedHost>,
        method: Method,
        url: impl Into<BackendUrl>,
        headers: impl Fn() -> HeaderMap + Sync,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = url.into();
        let started = tokio::time::Instant::now();
        let label = method.clone();
        let result = tokio::time::timeout_at(
            started + self.settings.request_timeout,
            self.follow(backend, extra, method, url, &headers, body),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)
        .and_then(|r| r);
        let status = match &result {
            Ok(response) => response.status.as_str(),
            Err(UpstreamError::Timeout) => "timeout",
            Err(UpstreamError::Connect(_)) => "refused",
            Err(UpstreamError::Broken) => "broken",
            Err(_) => "error",
        };
        self.metrics
            .upstream_requests
            .with(&[backend.id.0.as_str(), label.as_str(), status], |c| {
                c.inc()
            });
        self.metrics
            .upstream_duration
            .with(&[backend.id.0.as_str(), label.as_str()], |h| {
                h.observe(started.elapsed().as_secs_f64())
            });
        result
    }

    async fn follow(
        &self,
        backend: &BackendDef,
        extra: Option<&AllowedHost>,
        method: Method,
        mut url: BackendUrl,
        headers: &(impl Fn() -> HeaderMap + Sync),
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        for _ in 0..=self.settings.max_redirects {
            // The URL moves into the response (which carries it for relative `Location`s).
            let response = self
                .once(method.clone(), url, headers(), body.clone())
                .await?;
            if !matches!(
                response.status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                return Ok(response);
            }
            let location = response
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| UpstreamError::Redirect("redirect without Location".into()))?;
            let next = super::origin::join(&response.url, location)
                .map_err(|_| UpstreamError::Redirect("redirect to an invalid URL".into()))?;
            if !backend.allows_host(&next) && !extra.is_some_and(|host| host.allows(&next)) {
                return Err(UpstreamError::Redirect(
                    "redirect to a host the backend's definition does not allow".into(),
                ));
            }
            url = next;
        }
        Err(UpstreamError::Redirect(format!(
            "more than {} redirects",
            self.settings.max_redirects
        )))
    }

    /// One call to a vendor's own API (tokens, ingresses, live inputs, webhooks): bounded in
    /// time like any exchange, no redirect followed, counted by operation.
    pub async fn call_api(
        &self,
        backend: &str,
        operation: &'static str,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            self.settings.request_timeout,
            self.once(method, url.into(), headers, body),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)
        .and_then(|r| r);
        let outcome = match &result {
            Ok(response) => match response.status.as_u16() {
                200..=299 => "ok",
                429 => "429",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "error",
            },
            Err(UpstreamError::Timeout) => "timeout",
            Err(UpstreamError::Connect(_)) => "refused",
            Err(_) => "error",
        };
        self.count_api(backend, operation, outcome);
        self.metrics
            .vendor_api_duration
            .with_label_values(&[backend, operation])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Counts a vendor API call (or one whipgate held back: `limited`).
    pub fn count_api(&self, backend: &str, operation: &'static str, outcome: &'static str) {
        self.metrics
            .vendor_api_calls
            .with_label_values(&[backend, operation, outcome])
            .inc();
    }

    /// A GET whose answer is a stream read as it comes (a backend's WHEP event stream): the
    /// head within the request timeout, the body for as long as the backend keeps it open.
    /// No redirect is followed.
    pub async fn open_stream(
        &self,
        url: &Url,
        headers: HeaderMap,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let mut request = http::Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|_| UpstreamError::Protocol("backend URL is not a valid URI".into()))?;
        *request.headers_mut() = headers;
        tokio::time::timeout(self.settings.request_timeout, self.pool().request(request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect(connect_reason(&e))
                } else {
                    UpstreamError::Broken
                }
            })
    }

    async fn once(
        &self,
        method: Method,
        url: BackendUrl,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if url.scheme() == "http" {
            return self.once_plain(method, url, headers, body).await;
        }
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(body))
            .map_err(|_| UpstreamError::Protocol("backend URL is not a valid URI".into()))?;
        *request.headers_mut() = headers;
        let response = self.pool().request(request).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(connect_reason(&e))
            } else {
                UpstreamError::Broken
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = self.read_body(body).await?;
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            url,
        })
    }

    /// [`Self::once`] over plain HTTP/1.1, on this worker's own keep-alive connections.
    async fn once_plain(
        &self,
        method: Method,
        url: BackendUrl,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let invalid = || UpstreamError::Protocol("backend URL is not a valid URI".into());
        let authority = url.authority();
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.path_and_query())
            .body(Full::new(body))
            .map_err(|_| invalid())?;
        *request.headers_mut() = headers;
        if !request.headers().contains_key(http::header::HOST) {
            let host = http::HeaderValue::from_str(authority).map_err(|_| invalid())?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let (response, lease) = self
            .plain
            .send(authority, || url.as_str().parse().ok(), request)
            .await?;
        let (parts, body) = response.into_parts();
        let body = self.read_body(body).await?;
        self.plain.release(lease);
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body,
            url,
        })
    }

    async fn read_body(&self, body: hyper::body::Incoming) -> Result<Bytes, UpstreamError> {
        Ok(Limited::new(body, self.settings.max_response_bytes)
            .collect()
            .await
            .map_err(|_| UpstreamError::Protocol("backend response body too large or cut".into()))?
            .to_bytes())
    }
}

/// A short cause without the URL (which may hold a vendor secret).
fn connect_reason(error: &hyper_util::client::legacy::Error) -> String {
    innermost_reason(error)
}

/// The innermost cause of `error`, the one that says what failed (refused, unreachable, a
/// TLS alert) without the wrappers' context, which may name the URL.
pub(super) fn innermost_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source = error.source();
    let mut last = None;
    while let Some(cause) = source {
        last = Some(cause.to_string());
        source = cause.source();
    }
    last.unwrap_or_else(|| "connection failed".into())
}
