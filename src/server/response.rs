//! Building responses: errors become the right status with a one-line reason.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::GatewayError;

pub type Body = Full<Bytes>;

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// `text/plain` with the reason and a newline; `default_retry_after` fills in a Retry-After
/// the error needs but did not get from a backend.
pub fn error(error: &GatewayError, default_retry_after: Duration) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{error}\n"))));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(retry_after) = error.retry_after() {
        let seconds = if retry_after.is_zero() {
            default_retry_after
        } else {
            retry_after
        };
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(seconds.as_secs().max(1)),
        );
    }
    if let Some(allow) = error.allow() {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let GatewayError::Unauthenticated { challenge, .. } = error {
        if let Ok(value) = HeaderValue::from_str(challenge) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    } else if error.status() == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
