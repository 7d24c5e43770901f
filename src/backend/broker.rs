//! The credential broker's shared part: calls to vendors' own APIs (mint a token, create an
//! ingress or a live input, tell a webhook). Each call is bounded in time, counted by
//! operation and result, kept under the vendor's documented rate (a token bucket per
//! backend, so a burst of publishers fails over instead of earning a 429 for minutes), and
//! retried only where repeating it cannot do harm.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, Method};
use url::Url;

use super::exchange::retry_after;
use super::{
    AttemptError, BackendDef, KeyError, KindKeys, UpstreamError, UpstreamResponse, Upstreams,
};
use crate::error::GatewayError;

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads and deletes: once more after a refused connection or a 502/503/504.
    Idempotent,
    /// Creates: a retry could make a second ingress or input; never.
    Never,
}

/// A backend's API budget: `burst` calls at once, then `per_second` on average.
pub(super) struct Budget {
    limiter: DefaultDirectRateLimiter,
    per_second: f64,
    burst: u32,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({}/s, burst {})", self.per_second, self.burst)
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawBudget {
    Enabled(bool),
    Limits { per_second: f64, burst: u32 },
}

impl Budget {
    pub fn new(per_second: f64, burst: u32) -> Option<Self> {
        let period = Duration::try_from_secs_f64(1.0 / per_second).ok()?;
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
        Some(Self {
            limiter: RateLimiter::direct(quota),
            per_second,
            burst,
        })
    }

    /// `api_rate_limit = { per_second, burst }` (or `false`), else the vendor's default.
    pub fn from_keys(
        keys: &mut KindKeys<'_>,
        default: Option<(f64, u32)>,
    ) -> Result<Option<Self>, KeyError> {
        let chosen = match keys.value::<RawBudget>("api_rate_limit")? {
            None => default,
            Some(RawBudget::Enabled(false)) => None,
            Some(RawBudget::Enabled(true)) => default,
            Some(RawBudget::Limits { per_second, burst }) => Some((per_second, burst)),
        };
        match chosen {
            None => Ok(None),
            Some((per_second, burst)) if per_second.is_finite() && per_second > 0.0 => {
                Self::new(per_second, burst)
                    .map(Some)
                    .ok_or_else(|| keys.error("api_rate_limit needs per_second > 0 and burst >= 1"))
            }
            Some(_) => Err(keys.error("api_rate_limit needs per_second > 0 and burst >= 1")),
        }
    }

    fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// One API call of `backend`; any HTTP answer is `Ok` (see [`expect_success`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn call(
    cx: &Upstreams,
    backend: &BackendDef,
    budget: Option<&Budget>,
    operation: &'static str,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    retry: Retry,
) -> Result<UpstreamResponse, AttemptError> {
    let id = backend.id.0.as_str();
    if let Some(budget) = budget {
        if let Err(wait) = budget.take() {
            cx.client.count_api(id, operation, "limited");
            return Err(AttemptError::retryable(GatewayError::Unavailable {
                reason: format!("backend {id}: its API budget (api_rate_limit) is spent"),
                retry_after: wait.max(Duration::from_secs(1)),
            }));
        }
    }
    let attempts = match retry {
        Retry::Idempotent => 2,
        Retry::Never => 1,
    };
    let mut last = None;
    for _ in 0..attempts {
        let result = cx
            .client
            .call_api(
                id,
                operation,
                method.clone(),
                url.clone(),
                headers.clone(),
                body.clone(),
            )
            .await;
        let again = match &result {
            Err(UpstreamError::Connect(_)) => true,
            Ok(response) => matches!(response.status.as_u16(), 502..=504),
            Err(_) => false,
        };
        last = Some(result);
        if !again {
            break;
        }
    }
    match last {
        Some(Ok(mut response)) => {
            if !response.status.is_success() {
                // Refusals are logged (expect_success): never with the credential in them.
                let detail = super::exchange::refusal_detail(
                    &response.body,
                    headers.get(http::header::AUTHORIZATION),
                );
                response.body = Bytes::from(detail);
            }
            Ok(response)
        }
        Some(Err(error)) => Err(api_transport_error(backend, operation, error)),
        None => Err(AttemptError::fatal(GatewayError::Internal(
            "no API call was made".into(),
        ))),
    }
}

/// A 2xx, or the error the client and the failover logic should see.
pub(super) fn expect_success(
    backend: &BackendDef,
    operation: &'static str,
    response: &UpstreamResponse,
) -> Result<(), AttemptError> {
    let id = &backend.id;
    let status = response.status.as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    // `call` left only the refusal's first line, without the credential.
    let detail = String::from_utf8_lossy(&response.body);
    tracing::warn!(backend = %id, operation, status, detail = %detail, "vendor API refused");
    Err(match status {
        // 402: IVS's ServiceQuotaExceededException (a full stage): another backend may not be.
        402 | 429 | 500..=599 => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id}: its API answered {operation} with {status}"),
            retry_after: retry_after(&response.headers),
        }),
        401 | 403 => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id}: its API refused whipgate's credential for {operation} ({status})"
        ))),
        _ => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id}: its API refused {operation} ({status})"
        ))),
    })
}

/// The JSON body of a 2xx answer as `T`.
pub(super) fn json<T: serde::de::DeserializeOwned>(
    backend: &BackendDef,
    operation: &'static str,
    response: &UpstreamResponse,
) -> Result<T, AttemptError> {
    expect_success(backend, operation, response)?;
    serde_json::from_slice(&response.body).map_err(|e| {
        // Not the error itself: serde quotes the value it choked on, which may be a secret
        // URL or a token.
        tracing::warn!(
            backend = %backend.id,
            operation,
            problem = ?e.classify(),
            line = e.line(),
            column = e.column(),
            "vendor API answer not understood"
        );
        AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {}: its API's {operation} answer is not what its contract says",
            backend.id
        )))
    })
}

fn api_transport_error(
    backend: &BackendDef,
    operation: &'static str,
    error: UpstreamError,
) -> AttemptError {
    let id = &backend.id;
    match error {
        UpstreamError::Connect(cause) => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id}: its API is unreachable ({operation}): {cause}"),
            retry_after: Duration::ZERO,
        }),
        UpstreamError::Timeout => AttemptError::retryable(GatewayError::GatewayTimeout(format!(
            "backend {id}: its API timed out ({operation})"
        ))),
        UpstreamError::Broken => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id}: its API's connection broke ({operation})"),
            retry_after: Duration::ZERO,
        }),
        UpstreamError::Redirect(reason) | UpstreamError::Protocol(reason) => {
            AttemptError::retryable(GatewayError::BadGateway(format!(
                "backend {id}: its API failed ({operation}): {reason}"
            )))
        }
    }
}

/// Best effort, after the client already has its answer: logs what failed, never fails.
pub(super) fn log_cleanup_failure(backend: &BackendDef, operation: &str, error: &GatewayError) {
    tracing::warn!(backend = %backend.id, operation, %error, "vendor cleanup failed");
}

/// The JSON `Content-Type` most vendor APIs want.
pub(super) fn json_headers(authorization: Option<http::HeaderValue>) -> HeaderMap {
    let mut headers = bodiless_headers(authorization);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers
}

/// For a call that sends no body but wants a JSON answer.
pub(super) fn bodiless_headers(authorization: Option<http::HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(super::exchange::USER_AGENT),
    );
    if let Some(value) = authorization {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    headers
}
