//! The one error type of the gateway and its mapping to HTTP.
//!
//! Every variant knows its status and one-line reason; the reason is what the client reads,
//! so it never carries a backend's internals, URL or credential.

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A route's client auth refused the request; `challenge` is the WWW-Authenticate value.
    #[error("{reason}")]
    Unauthenticated { reason: String, challenge: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{reason}")]
    MethodNotAllowed { reason: String, allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    /// WHEP with no live publisher (WHEP §4.2.8).
    #[error("{reason}")]
    NotLive {
        reason: String,
        retry_after: Duration,
    },
    /// The client was too slow sending its request.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// The backend wants an If-Match the client did not send (428).
    #[error("{0}")]
    PreconditionRequired(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A rate or session limit of this client (429 + Retry-After).
    #[error("{reason}")]
    TooManyRequests {
        reason: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    BadGateway(String),
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized(_) | GatewayError::Unauthenticated { .. } => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Conflict(_) | GatewayError::NotLive { .. } => StatusCode::CONFLICT,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            GatewayError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long the client should wait before retrying, where that is meaningful.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::NotLive { retry_after, .. }
            | GatewayError::Unavailable { retry_after, .. }
            | GatewayError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The value of an `Allow` header to send with a 405.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            GatewayError::MethodNotAllowed { allow, .. } => Some(allow),
            _ => None,
        }
    }
}

impl From<crate::auth::AuthError> for GatewayError {
    fn from(error: crate::auth::AuthError) -> Self {
        let challenge = error
            .www_authenticate()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| "Bearer realm=\"whipgate\"".to_owned());
        match error {
            crate::auth::AuthError::Forbidden => {
                GatewayError::Forbidden("this credential may not use this stream".into())
            }
            other => GatewayError::Unauthenticated {
                reason: other.to_string(),
                challenge,
            },
        }
    }
}

impl From<crate::sdp::SdpError> for GatewayError {
    fn from(error: crate::sdp::SdpError) -> Self {
        match error {
            crate::sdp::SdpError::Malformed(_) => GatewayError::BadRequest(error.to_string()),
            crate::sdp::SdpError::Unacceptable(_) => GatewayError::Unprocessable(error.to_string()),
        }
    }
}
