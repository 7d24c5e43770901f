//! CORS and the headers every response carries, answered by the gateway itself: a preflight
//! never goes upstream and never carries TURN credentials.

use http::header::{self, HeaderMap, HeaderValue};

/// Headers a browser client must be able to read (RFC 9725 §4.9 and WHEP).
const EXPOSE: &str = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, X-Request-Id";
/// `*` does not cover Authorization, so every header is named.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, If-Match, X-Request-Id";
const MAX_AGE: &str = "600";

/// Adds the CORS response headers for a request from `origin`, if that origin is allowed.
pub fn decorate(headers: &mut HeaderMap, origin: Option<&HeaderValue>, allowed: &[String]) {
    let Some(origin) = origin else {
        return;
    };
    let value = if allowed.iter().any(|a| a == "*") {
        HeaderValue::from_static("*")
    } else if origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        origin.clone()
    } else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
}

/// The extra headers of a preflight answer; `methods` is what this resource really supports.
pub fn preflight(headers: &mut HeaderMap, methods: &'static str) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
}
