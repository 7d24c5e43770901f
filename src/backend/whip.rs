//! The generic WHIP/WHEP adapter: a standard server, spoken to in RFC 9725 terms, with the
//! differences real servers show (relative Locations, 403-for-401, 406-for-415, text bodies
//! on errors) turned into one behaviour.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use url::Url;

use super::{
    AttemptError, BackendAuth, BackendDef, CreateRequest, SessionRequest, UpstreamClient,
    UpstreamError, UpstreamResponse,
};
use crate::error::GatewayError;
use crate::frontdoor::{self, IceServer, UpstreamIfMatch};
use crate::kind::EndpointKind;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// A backend session that now exists.
#[derive(Debug, Clone)]
pub struct Created {
    pub answer: Bytes,
    /// Absolute, on a host the backend is allowed to use.
    pub resource: Url,
    pub etag: Option<String>,
    pub ice_servers: Vec<IceServer>,
}

/// A backend's reply to a PATCH.
#[derive(Debug, Clone)]
pub struct Patched {
    /// 204 for trickle, 200 with a fragment for an ICE restart.
    pub status: StatusCode,
    pub body: Option<Bytes>,
    pub etag: Option<String>,
}

pub async fn create(
    client: &UpstreamClient,
    backend: &Arc<BackendDef>,
    request: CreateRequest<'_>,
) -> Result<Created, AttemptError> {
    let template = backend.endpoint(request.kind).ok_or_else(|| {
        AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {} has no {} endpoint", backend.id, request.kind),
            retry_after: Duration::ZERO,
        })
    })?;
    let mut captures = request.captures.to_vec();
    if let Some(key) = &backend.url_key {
        captures.retain(|(name, _)| name != super::template::KEY_PLACEHOLDER);
        captures.push((
            super::template::KEY_PLACEHOLDER.to_owned(),
            key.expose().to_owned(),
        ));
    }
    let url = template
        .expand_with(request.stream, &captures)
        .map_err(|e| AttemptError::fatal(GatewayError::BadRequest(format!("stream name {e}"))))?;
    let mut headers = base_headers(backend, request.client_authorization, request.request_id);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    headers.insert(header::ACCEPT, HeaderValue::from_static(SDP));
    let response = client
        .send(backend, Method::POST, url, headers, request.offer)
        .await
        .map_err(|e| transport_error(backend, e))?;
    match response.status {
        StatusCode::CREATED | StatusCode::OK => created(backend, response),
        status => Err(create_refused(
            backend,
            request.kind,
            status,
            &response.headers,
        )),
    }
}

fn created(backend: &BackendDef, response: UpstreamResponse) -> Result<Created, AttemptError> {
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
    let resource = response
        .url
        .join(location.trim())
        .map_err(|_| bad("answered with an invalid Location"))?;
    if !matches!(resource.scheme(), "http" | "https") || !backend.allows_host(&resource) {
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
    Ok(Created {
        answer: response.body,
        resource,
        etag,
        ice_servers,
    })
}

fn create_refused(
    backend: &BackendDef,
    kind: EndpointKind,
    status: StatusCode,
    headers: &HeaderMap,
) -> AttemptError {
    let id = &backend.id;
    match status.as_u16() {
        400 => AttemptError::fatal(GatewayError::BadRequest(format!(
            "backend {id} rejected the offer"
        ))),
        401 | 403 => AttemptError::fatal(credential_refused(backend, status.as_u16())),
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

pub async fn patch(
    client: &UpstreamClient,
    backend: &Arc<BackendDef>,
    session: SessionRequest<'_>,
    body: Bytes,
    if_match: &UpstreamIfMatch,
) -> Result<Patched, GatewayError> {
    let mut headers = base_headers(backend, session.client_authorization, session.request_id);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
    let if_match_value = match if_match {
        UpstreamIfMatch::Any => Some(HeaderValue::from_static("*")),
        UpstreamIfMatch::Value(value) => Some(
            HeaderValue::from_str(value)
                .map_err(|_| GatewayError::PreconditionFailed("If-Match is not valid".into()))?,
        ),
        UpstreamIfMatch::Absent | UpstreamIfMatch::NoneUpstream => None,
    };
    if let Some(value) = if_match_value {
        headers.insert(header::IF_MATCH, value);
    }
    let response = client
        .send(
            backend,
            Method::PATCH,
            session.resource.clone(),
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
        204 => Ok(Patched {
            status: StatusCode::NO_CONTENT,
            body: None,
            etag: None,
        }),
        200 if response.body.is_empty() => Ok(Patched {
            status: StatusCode::NO_CONTENT,
            body: None,
            etag: None,
        }),
        200 => Ok(Patched {
            status: StatusCode::OK,
            etag: etag(),
            body: Some(response.body.clone()),
        }),
        status => Err(session_refused(backend, status, "PATCH")),
    }
}

pub async fn delete(
    client: &UpstreamClient,
    backend: &Arc<BackendDef>,
    session: SessionRequest<'_>,
) -> Result<(), GatewayError> {
    let headers = base_headers(backend, session.client_authorization, session.request_id);
    let response = client
        .send(
            backend,
            Method::DELETE,
            session.resource.clone(),
            headers,
            Bytes::new(),
        )
        .await
        .map_err(|e| transport_error(backend, e).error)?;
    match response.status.as_u16() {
        200..=299 => Ok(()),
        status => Err(session_refused(backend, status, "DELETE")),
    }
}

fn session_refused(backend: &BackendDef, status: u16, method: &str) -> GatewayError {
    let id = &backend.id;
    match status {
        400 => GatewayError::BadRequest(format!("backend {id} rejected the {method} body")),
        401 | 403 => credential_refused(backend, status),
        404 | 410 => GatewayError::NotFound("session not found".into()),
        405 | 501 => GatewayError::MethodNotAllowed {
            reason: format!("backend {id} does not support {method} on sessions"),
            allow: "DELETE, OPTIONS",
        },
        412 => GatewayError::PreconditionFailed(
            "If-Match does not match the session's current ETag".into(),
        ),
        422 => GatewayError::Unprocessable(format!(
            "backend {id} cannot do this {method} (trickle or ICE restart unsupported)"
        )),
        _ => GatewayError::BadGateway(format!("backend {id} answered {method} with {status}")),
    }
}

/// 401 and 403 mean one thing to the client: with `passthrough` its own credential was
/// refused (401); otherwise whipgate's credential for the backend is wrong (502, ops' fault).
fn credential_refused(backend: &BackendDef, status: u16) -> GatewayError {
    match backend.auth {
        BackendAuth::Passthrough => {
            GatewayError::Unauthorized("the backend refused the client's credentials".into())
        }
        _ => GatewayError::BadGateway(format!(
            "backend {} refused whipgate's credential ({status})",
            backend.id
        )),
    }
}

fn base_headers(
    backend: &BackendDef,
    client_authorization: Option<&HeaderValue>,
    request_id: &str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match &backend.auth {
        BackendAuth::None => {}
        BackendAuth::Bearer(secret) => {
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", secret.expose())) {
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        BackendAuth::Passthrough => {
            if let Some(value) = client_authorization {
                headers.insert(header::AUTHORIZATION, value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers
}

const USER_AGENT: &str = concat!("whipgate/", env!("CARGO_PKG_VERSION"));

fn transport_error(backend: &BackendDef, error: UpstreamError) -> AttemptError {
    let id = &backend.id;
    match error {
        UpstreamError::Connect(cause) => AttemptError::retryable(GatewayError::Unavailable {
            reason: format!("backend {id} unreachable: {cause}"),
            retry_after: Duration::ZERO,
        }),
        UpstreamError::Timeout => AttemptError::retryable(GatewayError::GatewayTimeout(format!(
            "backend {id} timed out"
        ))),
        UpstreamError::Redirect(reason) | UpstreamError::Protocol(reason) => {
            AttemptError::fatal(GatewayError::BadGateway(format!("backend {id}: {reason}")))
        }
    }
}

/// A backend's `Retry-After` in seconds (HTTP-dates are rare here and read as zero).
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO)
}
