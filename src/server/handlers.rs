//! What each endpoint does: translate HTTP into calls of the pure core and the backend
//! adapters, and back.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};
use url::Url;

use super::response::{self, Body};
use super::{cors, Gateway};
use crate::backend::{CreateRequest, SessionRequest};
use crate::config::Config;
use crate::error::GatewayError;
use crate::frontdoor::{self, UpstreamIfMatch};
use crate::kind::EndpointKind;
use crate::routing::StreamName;
use crate::sdp;
use crate::session::{LiveSession, SessionClaims};

const SDP: &str = "application/sdp";
const ACCEPT_PATCH: &str = "accept-patch";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ENDPOINT_METHODS: &str = "POST, GET, HEAD, OPTIONS";
const SESSION_METHODS: &str = "PATCH, DELETE, OPTIONS";
const SESSION_METHODS_NO_PATCH: &str = "DELETE, OPTIONS";

/// What a request was about, for its log line.
#[derive(Default)]
struct Outcome {
    endpoint: &'static str,
    route: Option<String>,
    backend: Option<String>,
    failovers: usize,
}

/// The path shapes whipgate serves.
enum Target<'a> {
    Endpoint(EndpointKind, &'a str),
    Session(&'a str),
    Unknown,
}

fn target(path: &str) -> Target<'_> {
    let mut parts = path.strip_prefix('/').unwrap_or(path).splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some("whip"), Some(rest)) if !rest.contains('/') => {
            Target::Endpoint(EndpointKind::Whip, rest)
        }
        (Some("whep"), Some(rest)) if !rest.contains('/') => {
            Target::Endpoint(EndpointKind::Whep, rest)
        }
        (Some("session"), Some(rest)) if !rest.contains('/') => Target::Session(rest),
        _ => Target::Unknown,
    }
}

impl Gateway {
    /// Serves one request. Never fails: every error is a response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let config = self.config();
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| hex(&self.random_bytes::<8>()));
        let origin = request.headers().get(header::ORIGIN).cloned();
        let method = request.method().clone();
        let mut outcome = Outcome::default();
        let work = self.dispatch(&config, request, &request_id, &mut outcome);
        let mut response = match tokio::time::timeout(config.server.request_timeout, work).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => response::error(&error, config.server.retry_after),
            Err(_) => response::error(
                &GatewayError::GatewayTimeout("request timed out".into()),
                config.server.retry_after,
            ),
        };
        let headers = response.headers_mut();
        cors::decorate(headers, origin.as_ref(), &config.server.cors_allow_origins);
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert("x-request-id", value);
        }
        tracing::info!(
            request_id = %request_id,
            method = %method,
            endpoint = outcome.endpoint,
            route = outcome.route.as_deref().unwrap_or("-"),
            backend = outcome.backend.as_deref().unwrap_or("-"),
            failovers = outcome.failovers,
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn dispatch<B>(
        &self,
        config: &Config,
        request: Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        match target(&path) {
            Target::Endpoint(kind, segment) => {
                outcome.endpoint = kind.as_str();
                let stream = StreamName::from_path_segment(segment)
                    .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
                match *request.method() {
                    Method::POST => {
                        self.create(config, kind, stream, request, request_id, outcome)
                            .await
                    }
                    Method::OPTIONS => Ok(endpoint_options(&request)),
                    Method::GET | Method::HEAD => {
                        endpoint_probe(config, kind, &stream, request.method())
                    }
                    _ => Err(GatewayError::MethodNotAllowed {
                        reason: format!("{} is not allowed on a {kind} endpoint", request.method()),
                        allow: ENDPOINT_METHODS,
                    }),
                }
            }
            Target::Session(token) => {
                outcome.endpoint = "session";
                let token = token.to_owned();
                match *request.method() {
                    Method::PATCH => {
                        self.patch(config, &token, request, request_id, outcome)
                            .await
                    }
                    Method::DELETE => {
                        self.delete(config, &token, &request, request_id, outcome)
                            .await
                    }
                    Method::OPTIONS => Ok(self.session_options(config, &token, &request)),
                    _ => Err(GatewayError::MethodNotAllowed {
                        reason: format!("{} is not allowed on a session", request.method()),
                        allow: SESSION_METHODS,
                    }),
                }
            }
            Target::Unknown => {
                outcome.endpoint = "other";
                Err(GatewayError::NotFound(
                    "no such endpoint: use /whip/{stream}, /whep/{stream} or /session/{token}"
                        .into(),
                ))
            }
        }
    }

    async fn create<B>(
        &self,
        config: &Config,
        kind: EndpointKind,
        stream: StreamName,
        request: Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        require_content_type(request.headers(), SDP)?;
        let route = config.routes.select(kind, &stream).ok_or_else(|| {
            GatewayError::NotFound(format!("no route serves {kind} stream {stream}"))
        })?;
        outcome.route = Some(route.id.clone());
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, config.server.max_body_bytes).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| GatewayError::BadRequest("malformed SDP: not UTF-8".into()))?;
        let offer = sdp::prepare_offer(kind, text)?;
        let authorization = parts.headers.get(header::AUTHORIZATION);

        let mut last_error = None;
        let mut refused_by_policy = None;
        for backend_id in &route.backends {
            let Some(backend) = config.backends.get(backend_id) else {
                continue;
            };
            if backend.endpoint(kind).is_none() {
                continue;
            }
            let policy = backend.sdp.overridden_by(&route.sdp);
            let upstream_offer = match offer.rewrite(&policy) {
                Ok(rewritten) => rewritten,
                Err(error) => {
                    tracing::debug!(request_id, backend = %backend.id, %error, "offer refused by the backend's SDP policy");
                    refused_by_policy = Some(error);
                    continue;
                }
            };
            if last_error.is_some() {
                outcome.failovers += 1;
            }
            outcome.backend = Some(backend.id.0.clone());
            let attempt = backend
                .adapter
                .create(
                    &self.client,
                    backend,
                    CreateRequest {
                        kind,
                        stream: &stream,
                        offer: Bytes::from(upstream_offer.text()),
                        client_authorization: authorization,
                        request_id,
                    },
                )
                .await;
            let created = match attempt {
                Ok(created) => created,
                Err(failure) if failure.retryable => {
                    tracing::warn!(
                        request_id,
                        backend = %backend.id,
                        reason = %failure.error,
                        "backend failed; trying the next candidate"
                    );
                    last_error = Some(failure.error);
                    continue;
                }
                Err(failure) => return Err(self.with_retry_after(config, failure.error)),
            };
            let answer = match upstream_offer
                .accept_answer(&String::from_utf8_lossy(&created.answer), &policy)
            {
                Ok(answer) => answer,
                Err(error) => {
                    self.release(backend.clone(), created.resource, request_id);
                    return Err(GatewayError::BadGateway(format!(
                        "backend {} gave an unusable answer: {error}",
                        backend.id
                    )));
                }
            };
            let now = (self.clock)();
            let claims = SessionClaims {
                sid: hex(&self.random_bytes::<12>()),
                backend: backend.id.0.clone(),
                resource: created.resource.to_string(),
                kind,
                stream: stream.as_str().to_owned(),
                route: route.id.clone(),
                created: now,
                expires: now.saturating_add(config.server.session_ttl.as_secs()),
            };
            let token = self.keys.seal(&claims, self.random_bytes::<12>());
            let location = session_url(config, &parts, &token)?;
            self.registry.insert(
                claims.sid.clone(),
                LiveSession {
                    backend: claims.backend.clone(),
                    route: claims.route.clone(),
                    kind,
                    created: now,
                },
            );
            let mut response = Response::new(http_body_util::Full::new(Bytes::from(answer)));
            *response.status_mut() = StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
            headers.insert(header::LOCATION, location);
            insert_etag(headers, created.etag.as_deref());
            for server in &created.ice_servers {
                if let Ok(value) = HeaderValue::from_str(&server.to_header_value()) {
                    headers.append(header::LINK, value);
                }
            }
            if backend.trickle {
                headers.insert(ACCEPT_PATCH, HeaderValue::from_static(SDPFRAG));
            }
            return Ok(response);
        }
        let reason = match (last_error, refused_by_policy) {
            (Some(error), _) => format!("no backend could serve this stream (last: {error})"),
            (None, Some(refusal)) => return Err(refusal.into()),
            (None, None) => format!("no backend of this route serves {kind}"),
        };
        Err(GatewayError::Unavailable {
            reason,
            retry_after: config.server.retry_after,
        })
    }

    async fn patch<B>(
        &self,
        config: &Config,
        token: &str,
        request: Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (claims, backend, resource) = self.open(config, token, outcome)?;
        if !backend.trickle {
            return Err(GatewayError::MethodNotAllowed {
                reason: "this session's backend does not support trickle ICE or ICE restart".into(),
                allow: SESSION_METHODS_NO_PATCH,
            });
        }
        require_content_type(request.headers(), SDPFRAG)?;
        let (parts, body) = request.into_parts();
        let if_match = frontdoor::upstream_if_match(
            parts
                .headers
                .get(header::IF_MATCH)
                .and_then(|v| v.to_str().ok()),
        )
        .map_err(|e| GatewayError::PreconditionFailed(e.to_string()))?;
        if if_match == UpstreamIfMatch::Absent {
            tracing::debug!(request_id, sid = %claims.sid, "PATCH without If-Match");
        }
        let body = read_body(&parts.headers, body, config.server.max_body_bytes).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| GatewayError::BadRequest("malformed SDP: not UTF-8".into()))?;
        let route_policy = config.routes.by_id(&claims.route).map(|r| &r.sdp);
        let policy = match route_policy {
            Some(route) => backend.sdp.overridden_by(route),
            None => backend.sdp.clone(),
        };
        let trickle = sdp::prepare_trickle(text, policy.drop_candidates.as_deref().unwrap_or(&[]))?;
        let patched = backend
            .adapter
            .patch(
                &self.client,
                &backend,
                SessionRequest {
                    resource: &resource,
                    client_authorization: parts.headers.get(header::AUTHORIZATION),
                    request_id,
                },
                Bytes::from(trickle.body),
                &if_match,
            )
            .await
            .map_err(|e| self.with_retry_after(config, e))?;
        let mut response = match patched.body {
            Some(body) => {
                let mut response = Response::new(http_body_util::Full::new(body));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
                insert_etag(response.headers_mut(), patched.etag.as_deref());
                response
            }
            None => response::empty(StatusCode::NO_CONTENT),
        };
        *response.status_mut() = patched.status;
        Ok(response)
    }

    async fn delete<B>(
        &self,
        config: &Config,
        token: &str,
        request: &Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError> {
        let (claims, backend, resource) = self.open(config, token, outcome)?;
        let result = backend
            .adapter
            .delete(
                &self.client,
                &backend,
                SessionRequest {
                    resource: &resource,
                    client_authorization: request.headers().get(header::AUTHORIZATION),
                    request_id,
                },
            )
            .await;
        match result {
            Ok(()) => {
                self.registry.remove(&claims.sid);
                Ok(response::empty(StatusCode::OK))
            }
            Err(error @ GatewayError::NotFound(_)) => {
                self.registry.remove(&claims.sid);
                Err(error)
            }
            Err(error) => Err(self.with_retry_after(config, error)),
        }
    }

    fn session_options<B>(
        &self,
        config: &Config,
        token: &str,
        request: &Request<B>,
    ) -> Response<Body> {
        let now = (self.clock)();
        let supports_patch = self
            .keys
            .open(token, now)
            .ok()
            .and_then(|claims| {
                config
                    .backends
                    .get(&crate::routing::BackendId(claims.backend))
                    .cloned()
            })
            .is_none_or(|backend| backend.trickle);
        let methods = if supports_patch {
            SESSION_METHODS
        } else {
            SESSION_METHODS_NO_PATCH
        };
        let mut response = response::empty(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static(methods));
        if supports_patch {
            headers.insert(ACCEPT_PATCH, HeaderValue::from_static(SDPFRAG));
        }
        if is_preflight(request) {
            cors::preflight(headers, methods);
        }
        response
    }

    /// Opens a session token; every failure is the same 404 and nothing goes upstream.
    fn open(
        &self,
        config: &Config,
        token: &str,
        outcome: &mut Outcome,
    ) -> Result<
        (
            SessionClaims,
            std::sync::Arc<crate::backend::BackendDef>,
            Url,
        ),
        GatewayError,
    > {
        let not_found = || GatewayError::NotFound("session not found".into());
        let claims = self
            .keys
            .open(token, (self.clock)())
            .map_err(|_| not_found())?;
        outcome.route = Some(claims.route.clone());
        outcome.backend = Some(claims.backend.clone());
        let backend = config
            .backends
            .get(&crate::routing::BackendId(claims.backend.clone()))
            .cloned()
            .ok_or_else(not_found)?;
        let resource = Url::parse(&claims.resource).map_err(|_| not_found())?;
        Ok((claims, backend, resource))
    }

    fn with_retry_after(&self, config: &Config, error: GatewayError) -> GatewayError {
        match error {
            GatewayError::NotLive {
                reason,
                retry_after,
            } if retry_after.is_zero() => GatewayError::NotLive {
                reason,
                retry_after: config.server.not_live_retry_after,
            },
            other => other,
        }
    }

    /// Best-effort DELETE of a backend session the client will never learn about.
    fn release(
        &self,
        backend: std::sync::Arc<crate::backend::BackendDef>,
        resource: Url,
        request_id: &str,
    ) {
        let client = self.client.clone();
        let request_id = request_id.to_owned();
        tokio::spawn(async move {
            let result = backend
                .adapter
                .delete(
                    &client,
                    &backend,
                    SessionRequest {
                        resource: &resource,
                        client_authorization: None,
                        request_id: &request_id,
                    },
                )
                .await;
            if let Err(error) = result {
                tracing::warn!(request_id, backend = %backend.id, %error, "could not release backend session");
            }
        });
    }
}

fn endpoint_options<B>(request: &Request<B>) -> Response<Body> {
    let mut response = response::empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(ENDPOINT_METHODS));
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    if is_preflight(request) {
        cors::preflight(headers, ENDPOINT_METHODS);
    }
    response
}

/// RFC 9725 §4.1: GET/HEAD on an endpoint answer 2xx without content; WHEP players probe
/// with HEAD and look for `Content-Type: application/sdp`.
fn endpoint_probe(
    config: &Config,
    kind: EndpointKind,
    stream: &StreamName,
    method: &Method,
) -> Result<Response<Body>, GatewayError> {
    if config.routes.select(kind, stream).is_none() {
        return Err(GatewayError::NotFound(format!(
            "no route serves {kind} stream {stream}"
        )));
    }
    let mut response = response::empty(StatusCode::NO_CONTENT);
    if kind == EndpointKind::Whep && method == Method::HEAD {
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    }
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    Ok(response)
}

fn is_preflight<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), GatewayError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if frontdoor::content_type_is(value, expected) {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(format!(
            "Content-Type must be {expected}"
        )))
    }
}

async fn read_body<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, GatewayError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || GatewayError::PayloadTooLarge(format!("body is larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(GatewayError::BadRequest(
            "could not read the request body".into(),
        )),
    }
}

/// `{public_url}/session/{token}`: absolute, on the public origin, without a query.
fn session_url(
    config: &Config,
    parts: &http::request::Parts,
    token: &str,
) -> Result<HeaderValue, GatewayError> {
    let base = match &config.server.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let authority = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| config.server.listen.to_string());
            format!("http://{authority}")
        }
    };
    HeaderValue::from_str(&format!("{base}/session/{token}"))
        .map_err(|_| GatewayError::Internal("could not build the session URL".into()))
}

fn insert_etag(headers: &mut HeaderMap, upstream: Option<&str>) {
    if let Ok(value) = HeaderValue::from_str(&frontdoor::gateway_etag(upstream)) {
        headers.insert(header::ETAG, value);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
