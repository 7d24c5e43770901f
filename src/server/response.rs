//! Building responses: errors become the right status with a one-line reason.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use tokio::sync::mpsc;

use crate::error::GatewayError;

/// A response body: whole (every response but one kind), or a server-sent event stream
/// fed by a task until either side ends it.
#[derive(Debug)]
pub enum Body {
    Whole(Option<Bytes>),
    Events(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Whole(bytes) => std::task::Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(events) => events
                .poll_recv(cx)
                .map(|event| event.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(bytes) if bytes.as_ref().is_none_or(Bytes::is_empty))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Whole(bytes) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Events(_) => http_body::SizeHint::default(),
        }
    }
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Whole(None));
    *response.status_mut() = status;
    response
}

/// `text/plain` with the reason and a newline; `default_retry_after` fills in a Retry-After
/// the error needs but did not get from a backend.
pub fn error(error: &GatewayError, default_retry_after: Duration) -> Response<Body> {
    let mut response = Response::new(Body::new(format!("{error}\n")));
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
