//! Speaking WHIP/WHEP (RFC 9725) to a remote server: POST an offer, PATCH and DELETE its
//! resource. Every remote kind ends here once it has its URL and credential, so the
//! differences real servers show (relative or foreign Locations, 403-for-401, 406-for-415,
//! unquoted ETags, text error bodies) are turned into one behaviour in one place.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::{
    AllowedHost, AttemptError, BackendDef, BackendUrl, Created, Patched, UpstreamError,
    UpstreamResponse, Upstreams,
};
use crate::error::GatewayError;
use crate::frontdoor::{self, UpstreamIfMatch};
use crate::kind::EndpointKind;
use crate::session::SessionState;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Where and how to send one WHIP/WHEP request.
pub(super) struct Target<'a> {
    pub url: BackendUrl,
    /// Whipgate's credential for this backend (or the client's, with `passthrough`).
    pub authorization: Option<HeaderValue>,
    /// The credential is the client's own: a 401/403 is the client's fault.
    pub passthrough: bool,
    /// A host the vendor's API handed out for this session, trusted besides the backend's.
    pub extra_host: Option<&'a AllowedHost>,
    /// `Accept` of the POST (some vendors answer errors as text).
    pub accept: &'static str,
    pub request_id: &'a str,
}

impl<'a> Target<'a> {
    pub fn new(
        url: impl Into<BackendUrl>,
        authorization: Option<HeaderValue>,
        request_id: &'a str,
    ) -> Self {
        Self {
            url: url.into(),
            authorization,
            passthrough: false,
            extra_host: None,
            accept: SDP,
            request_id,
        }
    }
}

/// `Authorization: Bearer <secret>`, marked sensitive so no debug output shows it.
pub(super) fn bearer(secret: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// POSTs `offer`; a 201 (or 200) with a usable Location is a session.
/// Session state keys: a backend's own WHEP events URL, and the events it offers.
pub const BACKEND_EVENTS: &str = "whipgate.events";
pub const BACKEND_EVENT_NAMES: &str = "whipgate.events.names";

pub(super) async fn post_offer(
    cx: &Upstreams,
    backend: &BackendDef,
    kind: EndpointKind,
    target: &Target<'_>,
    offer: Bytes,
) -> Result<Created, AttemptError> {
    let legacy = offer.is_empty();
    let headers = || {
        let mut headers = base_headers(target);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
        headers.insert(header::ACCEPT, HeaderValue::from_static(target.accept));
        headers
    };
    let response = cx
        .client
        .send(
            backend,
            target.extra_host,
            Method::POST,
            target.url.clone(),
            headers,
            offer,
        )
        .await
        .map_err(|e| transport_error(backend, e))?;
    match response.status {
        // To an empty (legacy) POST, the body of a 201 is the server's own offer.
        StatusCode::CREATED | StatusCode::OK => created(backend, target, response, legacy),
        // WHEP: the server refuses the offer and makes its own. Only an SDP body makes a
        // 406 a counter-offer (its SDP is checked by the front door); otherwise it is an
        // ordinary refusal.
        StatusCode::NOT_ACCEPTABLE
            if kind == EndpointKind::Whep
                && is_sdp(&response.headers)
                && !response.body.is_empty()
                && response.headers.contains_key(header::LOCATION) =>
        {
            created(backend, target, response, true)
        }
        status => {
            log_refusal(backend, "POST", &response, target.authorization.as_ref());
            Err(create_refused(
                backend,
                kind,
                status,
                &response.headers,
                target.passthrough,
            ))
        }
    }
}

fn is_sdp(headers: &HeaderMap) -> bool {
    frontdoor::content_type_is(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        SDP,
    )
}

fn created(
    backend: &BackendDef,
    target: &Target<'_>,
    response: UpstreamResponse,
    counter_offer: bool,
) -> Result<Created, AttemptError> {
    let bad = |reason: &str| {
        AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {} {reason}",
            backend.id
        )))
    };
    let location = response
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("answered without a Location"))?;
    let resource = super::origin::join(&response.url, location.trim())
        .map_err(|_| bad("answered with an invalid Location"))?;
    let allowed = backend.allows_host(&resource)
        || target.extra_host.is_some_and(|host| host.allows(&resource));
    if !matches!(resource.scheme(), "http" | "https") || !allowed {
        return Err(bad(
            "answered with a Location on a host it is not allowed to use",
        ));
    }
    if response.body.is_empty() {
        return Err(bad("answered without SDP"));
    }
    let etag = response
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let ice_servers = frontdoor::ice_servers(
        response
            .headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let mut state = SessionState::new();
    // A backend with WHEP events of its own (another whipgate, say): its stream is relayed
    // to the player. Only on the backend's own hosts, like its Location.
    if let Some((uri, events)) = frontdoor::events_link(
        response
            .headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    ) {
        match super::origin::join(&response.url, &uri) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && (backend.allows_host(&url)
                        || target.extra_host.is_some_and(|host| host.allows(&url))) =>
            {
                state.insert(BACKEND_EVENTS.into(), url.to_string());
                state.insert(BACKEND_EVENT_NAMES.into(), events.join(","));
            }
            _ => {
                tracing::debug!(backend = %backend.id, "an events link off the backend's hosts is ignored")
            }
        }
    }
    Ok(Created {
        answer: response.body,
        counter_offer,
        resource,
        etag,
        ice_servers,
        state,
    })
}

fn create_refused(
    backend: &BackendDef,
    kind: EndpointKind,
    status: StatusCode,
    headers: &HeaderMap,
    passthrough: bool,
) -> AttemptError {
    let id = &backend.id;
    match status.as_u16() {
        400 => AttemptError::fatal(GatewayError::BadRequest(format!(
            "backend {id} rejected the offer"
        ))),
        401 | 403 => AttemptError::fatal(credential_refused(backend, status.as_u16(), passthrough)),
        404 | 409 if kind == EndpointKind::Whep => AttemptError::fatal(GatewayError::NotLive {
            reason: "no publisher is live on this stream".into(),
            retry_after: Duration::ZERO,
        }),
        404 => AttemptError::fatal(GatewayError::NotFound(format!(
            "backend {id} has no endpoint for this stream"
        ))),
        409 => AttemptError::fatal(GatewayError::Conflict(format!(
            "backend {id} refused: the stream is already in use"
        ))),
        406 | 415 => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id} refused application/sdp ({status})"
        ))),
        422 => AttemptError::fatal(GatewayError::Unprocessable(format!(
            "backend {id} cannot accept this offer"
        ))),
        429 | 500..=599 => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id} answered {status}"),
            retry_after: retry_after(headers),
        }),
        _ => AttemptError::fatal(GatewayError::BadGateway(format!(
            "backend {id} answered {status}"
        ))),
    }
}

/// Forwards a trickle or ICE-restart fragment to the session's resource.
pub(super) async fn patch(
    cx: &Upstreams,
    backend: &BackendDef,
    target: &Target<'_>,
    body: Bytes,
    if_match: &UpstreamIfMatch,
) -> Result<Patched, GatewayError> {
    let if_match_value = match if_match {
        UpstreamIfMatch::Any => Some(HeaderValue::from_static("*")),
        UpstreamIfMatch::Value(value) => Some(
            HeaderValue::from_str(value)
                .map_err(|_| GatewayError::PreconditionFailed("If-Match is not valid".into()))?,
        ),
        UpstreamIfMatch::Absent | UpstreamIfMatch::NoneUpstream => None,
    };
    let headers = || {
        let mut headers = base_headers(target);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
        if let Some(value) = &if_match_value {
            headers.insert(header::IF_MATCH, value.clone());
        }
        headers
    };
    let response = cx
        .client
        .send(
            backend,
            target.extra_host,
            Method::PATCH,
            target.url.clone(),
            headers,
            body,
        )
        .await
        .map_err(|e| transport_error(backend, e).error)?;
    let etag = || {
        response
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    match response.status.as_u16() {
        204 => Ok(Patched::trickled()),
        200 if response.body.is_empty() => Ok(Patched::trickled()),
        200 => Ok(Patched {
            status: StatusCode::OK,
            etag: etag(),
            body: Some(response.body.clone()),
        }),
        status => {
            log_refusal(backend, "PATCH", &response, target.authorization.as_ref());
            Err(session_refused(
                backend,
                status,
                "PATCH",
                target.passthrough,
            ))
        }
    }
}

/// Sends a client's answer to the backend's offer (WHEP: `PATCH application/sdp`).
pub(super) async fn answer(
    cx: &Upstreams,
    backend: &BackendDef,
    target: &Target<'_>,
    answer: Bytes,
) -> Result<(), GatewayError> {
    let headers = || {
        let mut headers = base_headers(target);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
        headers
    };
    send_expecting_success(cx, backend, target, Method::PATCH, headers, answer).await
}

/// DELETEs the session's resource; any 2xx is done.
pub(super) async fn delete(
    cx: &Upstreams,
    backend: &BackendDef,
    target: &Target<'_>,
) -> Result<(), GatewayError> {
    let headers = || base_headers(target);
    send_expecting_success(cx, backend, target, Method::DELETE, headers, Bytes::new()).await
}

/// One request on a session's resource where any 2xx is done and the rest is refused.
async fn send_expecting_success(
    cx: &Upstreams,
    backend: &BackendDef,
    target: &Target<'_>,
    method: Method,
    headers: impl Fn() -> HeaderMap + Sync,
    body: Bytes,
) -> Result<(), GatewayError> {
    let name = method.clone();
    let response = cx
        .client
        .send(
            backend,
            target.extra_host,
            method,
            target.url.clone(),
            headers,
            body,
        )
        .await
        .map_err(|e| transport_error(backend, e).error)?;
    match response.status.as_u16() {
        200..=299 => Ok(()),
        status => {
            log_refusal(
                backend,
                name.as_str(),
                &response,
                target.authorization.as_ref(),
            );
            Err(session_refused(
                backend,
                status,
                name.as_str(),
                target.passthrough,
            ))
        }
    }
}

fn session_refused(
    backend: &BackendDef,
    status: u16,
    method: &str,
    passthrough: bool,
) -> GatewayError {
    let id = &backend.id;
    match status {
        400 => GatewayError::BadRequest(format!("backend {id} rejected the {method} body")),
        401 | 403 => credential_refused(backend, status, passthrough),
        404 | 410 => GatewayError::NotFound("session not found".into()),
        405 | 501 => GatewayError::MethodNotAllowed {
            reason: format!("backend {id} does not support {method} on sessions"),
            allow: "DELETE, OPTIONS",
        },
        412 => GatewayError::PreconditionFailed(
            "If-Match does not match the session's current ETag".into(),
        ),
        428 => {
            GatewayError::PreconditionRequired(format!("backend {id} needs If-Match on {method}"))
        }
        422 => GatewayError::Unprocessable(format!(
            "backend {id} cannot do this {method} (trickle or ICE restart unsupported)"
        )),
        _ => GatewayError::BadGateway(format!("backend {id} answered {method} with {status}")),
    }
}

/// 401 and 403 mean one thing to the client: with `passthrough` its own credential was
/// refused (401); otherwise whipgate's credential for the backend is wrong (502, ops' fault).
fn credential_refused(backend: &BackendDef, status: u16, passthrough: bool) -> GatewayError {
    if passthrough {
        GatewayError::Unauthorized("the backend refused the client's credentials".into())
    } else {
        GatewayError::BadGateway(format!(
            "backend {} refused whipgate's credential ({status})",
            backend.id
        ))
    }
}

/// Vendors explain refusals in their bodies (Millicast's `text/plain`, LiveKit's JSON): ops
/// see the first line in the log; the client gets whipgate's own one-line error.
fn log_refusal(
    backend: &BackendDef,
    method: &str,
    response: &UpstreamResponse,
    credential: Option<&HeaderValue>,
) {
    let reason = refusal_detail(&response.body, credential);
    tracing::info!(
        backend = %backend.id,
        method,
        status = response.status.as_u16(),
        reason = %reason,
        "backend refused"
    );
}

/// The first line of a vendor's refusal, short, and without the credential whipgate sent:
/// APIs quote a refused key back ("Incorrect API key provided: ...").
pub(super) fn refusal_detail(body: &[u8], credential: Option<&HeaderValue>) -> String {
    let text = String::from_utf8_lossy(body);
    let mut first = text.lines().next().unwrap_or("").trim().to_owned();
    if let Some(value) = credential.and_then(|v| v.to_str().ok()) {
        let secret = value.split_once(' ').map_or(value, |(_, rest)| rest).trim();
        if !secret.is_empty() {
            first = first.replace(secret, "[redacted]");
        }
    }
    first.chars().take(200).collect()
}

fn base_headers(target: &Target<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = &target.authorization {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    if let Ok(value) = HeaderValue::from_str(target.request_id) {
        headers.insert(frontdoor::X_REQUEST_ID, value);
    }
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers
}

pub(super) const USER_AGENT: &str = concat!("whipgate/", env!("CARGO_PKG_VERSION"));

pub(super) fn transport_error(backend: &BackendDef, error: UpstreamError) -> AttemptError {
    let id = &backend.id;
    match error {
        UpstreamError::Connect(cause) => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id} unreachable: {cause}"),
            retry_after: Duration::ZERO,
        }),
        UpstreamError::Timeout => AttemptError::retryable(GatewayError::GatewayTimeout(format!(
            "backend {id} timed out"
        ))),
        // Like a timeout: the backend died under the request. The next backend is tried; if
        // this one had made a session before dying, it is orphaned there (it ends with its
        // peer connection, which never forms, or with the backend's restart).
        UpstreamError::Broken => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id}: the connection broke mid-exchange"),
            retry_after: Duration::ZERO,
        }),
        UpstreamError::Redirect(reason) | UpstreamError::Protocol(reason) => {
            AttemptError::fatal(GatewayError::BadGateway(format!("backend {id}: {reason}")))
        }
    }
}

/// A backend's `Retry-After`: delay-seconds, or an HTTP-date from now; anything else is
/// zero. Any size parses (the health board clamps it to the backend's `max_rest`).
pub(super) fn retry_after(headers: &HeaderMap) -> Duration {
    let Some(value) = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return Duration::ZERO;
    };
    if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        return Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    httpdate::parse_http_date(value)
        .ok()
        .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_quoting_the_credential_is_logged_without_it() {
        let sent = HeaderValue::from_static("Bearer ek_abc123");
        let body = b"{\"error\":{\"message\":\"Invalid key ek_abc123, or Bearer ek_abc123\"}}\nsecond line";
        let detail = refusal_detail(body, Some(&sent));
        assert!(!detail.contains("ek_abc123"), "{detail}");
        assert!(detail.contains("Invalid key [redacted]"), "{detail}");
        assert!(!detail.contains("second line"));
        let long = "x".repeat(500);
        assert_eq!(refusal_detail(long.as_bytes(), None).len(), 200);
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(value).expect("value"),
        );
        headers
    }

    #[test]
    fn retry_after_takes_seconds_of_any_size_and_dates() {
        assert_eq!(retry_after(&with("120")), Duration::from_secs(120));
        assert_eq!(
            retry_after(&with("99999999999999999999999")),
            Duration::from_secs(u64::MAX)
        );
        let in_a_minute =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let parsed = retry_after(&with(&in_a_minute));
        assert!(parsed > Duration::from_secs(50) && parsed <= Duration::from_secs(60));
        assert_eq!(
            retry_after(&with("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::ZERO
        );
        assert_eq!(retry_after(&with("soon")), Duration::ZERO);
        assert_eq!(retry_after(&HeaderMap::new()), Duration::ZERO);
    }
}
