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
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
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
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Conflict(_) | GatewayError::NotLive { .. } => StatusCode::CONFLICT,
            GatewayError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            GatewayError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
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
            | GatewayError::Unavailable { retry_after, .. } => Some(*retry_after),
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

impl From<crate::sdp::SdpError> for GatewayError {
    fn from(error: crate::sdp::SdpError) -> Self {
        match error {
            crate::sdp::SdpError::Malformed(_) => GatewayError::BadRequest(error.to_string()),
            crate::sdp::SdpError::Unacceptable(_) => GatewayError::Unprocessable(error.to_string()),
        }
    }
}
