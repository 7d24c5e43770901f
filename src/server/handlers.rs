//! What each endpoint does: translate HTTP into calls of the pure core and the backend
//! adapters, and back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};
use url::Url;

use super::response::{self, Body};
use super::{cors, hex, Gateway};
use crate::backend::SessionRequest;
use crate::config::Config;
use crate::error::GatewayError;
use crate::frontdoor::{self, UpstreamIfMatch};
use crate::kind::EndpointKind;
use crate::routing::StreamName;
use crate::sdp;
use crate::session::SessionClaims;

const SDP: &str = "application/sdp";
const ACCEPT_PATCH: &str = "accept-patch";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ENDPOINT_METHODS: &str = "POST, GET, HEAD, OPTIONS";
const SESSION_METHODS: &str = "PATCH, DELETE, OPTIONS";
const SESSION_METHODS_NO_PATCH: &str = "DELETE, OPTIONS";

/// A place among the requests being served; leaving it (on drop) frees it.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(counter))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request was about, for its log line.
#[derive(Default)]
pub(super) struct Outcome {
    pub endpoint: &'static str,
    pub route: Option<String>,
    pub backend: Option<String>,
    pub failovers: usize,
}

/// The path shapes whipgate serves.
enum Target<'a> {
    Endpoint(EndpointKind, &'a str),
    Session(&'a str),
    /// A WHEP session's events: subscribe (`None`), or a stream (`Some(list)`).
    Events(&'a str, Option<&'a str>),
    /// A WHEP session's layer choice.
    Layer(&'a str),
    Admin(&'a str),
    Healthz,
    Readyz,
    Metrics,
    Page(super::pages::Page),
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
        (Some("session"), Some(rest)) => {
            let mut parts = rest.split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(token), Some("events"), list, None) => Target::Events(token, list),
                (Some(token), Some("layer"), None, None) => Target::Layer(token),
                _ => Target::Unknown,
            }
        }
        (Some("admin"), Some(rest)) if !rest.contains('/') => Target::Admin(rest),
        (Some("healthz"), None) => Target::Healthz,
        (Some("readyz"), None) => Target::Readyz,
        (Some("metrics"), None) => Target::Metrics,
        _ => super::pages::Page::from_path(path).map_or(Target::Unknown, Target::Page),
    }
}

impl Gateway {
    /// Serves one request. Never fails: every error is a response.
    pub async fn handle<B>(self: &std::sync::Arc<Self>, request: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // tokio's clock, as the deadline's: the two agree in tests whose time is paused.
        let started = tokio::time::Instant::now();
        let config = self.config();
        let request_id = request
            .headers()
            .get(frontdoor::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| hex(&self.random_bytes::<8>()));
        let origin = request.headers().get(header::ORIGIN).cloned();
        let method = request.method().clone();
        let mut outcome = Outcome::default();
        // Probes and scrapes must get through when the gateway is saturated.
        let exempt = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
        let _slot = if exempt {
            None
        } else {
            match InFlight::enter(&self.in_flight, config.server.max_concurrent_requests) {
                Some(slot) => Some(slot),
                None => {
                    let mut response = response::error(
                        &GatewayError::Unavailable {
                            reason: "whipgate is at its concurrent request limit".into(),
                            retry_after: Duration::from_secs(1),
                        },
                        config.server.retry_after,
                    );
                    cors::decorate(
                        response.headers_mut(),
                        origin.as_ref(),
                        &config.server.cors_allow_origins,
                    );
                    self.metrics.requests.with(
                        &["shed", crate::metrics::method_label(&method), "503"],
                        |c| c.inc(),
                    );
                    return response;
                }
            }
        };
        let work = self.dispatch(&config, request, &request_id, &mut outcome);
        // The deadline from `started`: `timeout` would read the clock again.
        let deadline = started + config.server.request_timeout;
        let mut response = match tokio::time::timeout_at(deadline, work).await {
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
            headers.insert(frontdoor::X_REQUEST_ID, value);
        }
        let status = response.status();
        let method_label = crate::metrics::method_label(&method);
        self.metrics
            .requests
            .with(&[outcome.endpoint, method_label, status.as_str()], |c| {
                c.inc()
            });
        self.metrics
            .request_duration
            .with(&[outcome.endpoint, method_label], |h| {
                h.observe(started.elapsed().as_secs_f64())
            });
        tracing::info!(
            request_id = %request_id,
            method = %method,
            endpoint = outcome.endpoint,
            route = outcome.route.as_deref().unwrap_or("-"),
            backend = outcome.backend.as_deref().unwrap_or("-"),
            failovers = outcome.failovers,
            status = response.status().as_u16(),
            // Whole microseconds: `as_secs_f64() * 1000.0` printed float noise (5.188594999999999).
            latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
            "request"
        );
        response
    }

    async fn dispatch<B>(
        self: &std::sync::Arc<Self>,
        config: &std::sync::Arc<Config>,
        request: Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        let listener = request
            .extensions()
            .get::<super::Arrival>()
            .map_or(super::Listener::Main, |arrival| arrival.listener);
        let target = match (listener, target(&path)) {
            (
                super::Listener::Metrics,
                t @ (Target::Healthz | Target::Readyz | Target::Metrics),
            ) => t,
            (super::Listener::Metrics, _) => Target::Unknown,
            (super::Listener::Main, Target::Metrics)
                if self
                    .metrics_listener
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Target::Unknown
            }
            (super::Listener::Main, t) => t,
        };
        // An OPTIONS that is not a preflight may mint TURN credentials: limited like POST.
        let limited = matches!(
            (&target, request.method()),
            (Target::Endpoint(..), &Method::POST)
                | (Target::Session(_), &Method::PATCH | &Method::DELETE)
        ) || (matches!(target, Target::Endpoint(..))
            && request.method() == Method::OPTIONS
            && !is_preflight(&request));
        if limited {
            if let Some(client) =
                super::create::client_address(config, request.headers(), request.extensions())
            {
                if let Err(wait) = self.rate_check(config, client) {
                    return Err(GatewayError::TooManyRequests {
                        reason: "too many requests from this address".into(),
                        retry_after: std::time::Duration::from_secs(
                            crate::ratelimit::retry_after_secs(wait),
                        ),
                    });
                }
            }
        }
        match target {
            Target::Endpoint(kind, segment) => {
                outcome.endpoint = kind.as_str();
                let stream = StreamName::from_path_segment(segment)
                    .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
                match *request.method() {
                    Method::POST => {
                        self.create(config, kind, stream, request, request_id, outcome)
                            .await
                    }
                    Method::OPTIONS => {
                        let mut response = endpoint_options(&request);
                        if !is_preflight(&request) {
                            self.ice_links_for_options(
                                config,
                                kind,
                                &stream,
                                &request,
                                &mut response,
                            );
                        }
                        Ok(response)
                    }
                    Method::GET | Method::HEAD => endpoint_probe(config, kind, &stream, &request),
                    _ => Err(GatewayError::MethodNotAllowed {
                        reason: format!("{} is not allowed on a {kind} endpoint", request.method()),
                        allow: ENDPOINT_METHODS,
                    }),
                }
            }
            Target::Session(token) => {
                outcome.endpoint = "session";
                let token = token.to_owned();
                if matches!(*request.method(), Method::PATCH | Method::DELETE) {
                    if let Some(owner) = self.carried_to(config, &token, &request) {
                        return self.carry(config, &token, owner, request).await;
                    }
                }
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
            Target::Healthz => {
                outcome.endpoint = "health";
                Ok(text_response(StatusCode::OK, "ok\n"))
            }
            Target::Readyz => {
                outcome.endpoint = "health";
                if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(text_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting down\n",
                    ));
                }
                let now = self.clock.instant();
                let ready = config
                    .backends
                    .keys()
                    .any(|id| self.health.is_available(&id.0, now));
                Ok(if ready {
                    text_response(StatusCode::OK, "ready\n")
                } else {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "no backend is healthy\n")
                })
            }
            Target::Metrics => {
                outcome.endpoint = "metrics";
                let mut response = text_response(StatusCode::OK, "");
                *response.body_mut() = Body::new(Bytes::from(self.render_metrics()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
            Target::Admin(what) => {
                outcome.endpoint = "admin";
                let what = what.to_owned();
                self.admin(&what, request).await
            }
            Target::Page(page) if config.server.pages => {
                outcome.endpoint = "page";
                match *request.method() {
                    Method::GET | Method::HEAD => Ok(self.page(config, page).await),
                    _ => Err(GatewayError::MethodNotAllowed {
                        reason: format!("{} is not allowed on a page", request.method()),
                        allow: "GET, HEAD",
                    }),
                }
            }
            Target::Events(token, list) => {
                outcome.endpoint = "events";
                if *request.method() == Method::OPTIONS {
                    let methods = if list.is_some() {
                        "GET, DELETE, OPTIONS"
                    } else {
                        "POST, OPTIONS"
                    };
                    let mut response = response::empty(StatusCode::NO_CONTENT);
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(methods));
                    if is_preflight(&request) {
                        cors::preflight(response.headers_mut(), methods);
                    }
                    return Ok(response);
                }
                let (token, list) = (token.to_owned(), list.map(str::to_owned));
                self.events(config, &token, list.as_deref(), request).await
            }
            Target::Layer(token) => {
                outcome.endpoint = "events";
                if *request.method() == Method::OPTIONS {
                    let mut response = response::empty(StatusCode::NO_CONTENT);
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
                    if is_preflight(&request) {
                        cors::preflight(response.headers_mut(), "POST, OPTIONS");
                    }
                    return Ok(response);
                }
                let token = token.to_owned();
                if let Some(owner) = self.carried_to(config, &token, &request) {
                    return self.carry(config, &token, owner, request).await;
                }
                self.layer(config, &token, request, request_id).await
            }
            Target::Page(_) | Target::Unknown => {
                outcome.endpoint = "other";
                Err(GatewayError::NotFound(
                    "no such endpoint: use /whip/{stream}, /whep/{stream} or /session/{token}"
                        .into(),
                ))
            }
        }
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
        let (claims, backend, resource) = self.open(config, token, request.headers(), outcome)?;
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if frontdoor::content_type_is(content_type, SDP) {
            return self
                .answer(config, claims, backend, resource, request, request_id)
                .await;
        }
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
        let body = read_body(&parts.headers, body, config).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| GatewayError::BadRequest("malformed SDP: not UTF-8".into()))?;
        let route_policy = config.routes.by_id(&claims.route).map(|route| &route.sdp);
        let policy = match route_policy {
            Some(route) => backend.sdp.overridden_by(route),
            None => backend.sdp.clone(),
        };
        let trickle = sdp::prepare_trickle(text, policy.drop_candidates.as_deref().unwrap_or(&[]))?;
        let patched = backend
            .adapter
            .patch(
                &self.upstreams,
                &backend,
                self.session_request(
                    config,
                    &claims,
                    &resource,
                    &parts.headers,
                    &parts.extensions,
                    request_id,
                ),
                Bytes::from(trickle.body),
                &if_match,
            )
            .await
            .map_err(|error| {
                // The backend no longer holds the session (its client vanished, it expired
                // there): it stops counting here, as after a DELETE.
                if let GatewayError::NotFound(_) = error {
                    self.session_ended(config, &claims, false);
                }
                self.with_retry_after(config, error)
            })?;
        let body = match (patched.body, &policy.answer) {
            (Some(body), Some(answer)) => {
                let text = std::str::from_utf8(&body).map_err(|_| {
                    GatewayError::BadGateway("the backend's sdpfrag is not UTF-8".into())
                })?;
                let rewritten = sdp::prepare_answer_fragment(text, answer).map_err(|e| {
                    GatewayError::BadGateway(format!("the backend's sdpfrag is unusable: {e}"))
                })?;
                Some(Bytes::from(rewritten))
            }
            (body, _) => body,
        };
        let mut response = match body {
            Some(body) => {
                let mut response = Response::new(Body::new(body));
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

    /// `PATCH application/sdp`: the client's answer to the backend's offer (WHEP-04 §4.2's
    /// counter-offer, or a legacy server offer). Only a session that got an offer expects
    /// one (422 otherwise, as WHEP-04 says).
    async fn answer<B>(
        &self,
        config: &Config,
        claims: SessionClaims,
        backend: std::sync::Arc<crate::backend::BackendDef>,
        resource: crate::backend::BackendUrl,
        request: Request<B>,
        request_id: &str,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !claims.state.contains_key(super::create::ANSWER_EXPECTED) {
            return Err(GatewayError::Unprocessable(
                "this session expects no SDP answer: PATCH it with application/trickle-ice-sdpfrag"
                    .into(),
            ));
        }
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, config).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| GatewayError::BadRequest("malformed SDP: not UTF-8".into()))?;
        let answer = sdp::prepare_client_answer(text)?;
        backend
            .adapter
            .answer(
                &self.upstreams,
                &backend,
                self.session_request(
                    config,
                    &claims,
                    &resource,
                    &parts.headers,
                    &parts.extensions,
                    request_id,
                ),
                Bytes::from(answer),
            )
            .await
            .map_err(|error| match error {
                GatewayError::NotFound(_) => {
                    self.session_ended(config, &claims, false);
                    error
                }
                GatewayError::Unprocessable(_) => GatewayError::Unprocessable(format!(
                    "backend {} refused the answer",
                    claims.backend
                )),
                other => self.with_retry_after(config, other),
            })?;
        Ok(response::empty(StatusCode::NO_CONTENT))
    }

    async fn delete<B>(
        &self,
        config: &Config,
        token: &str,
        request: &Request<B>,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, GatewayError> {
        let (claims, backend, resource) = self.open(config, token, request.headers(), outcome)?;
        let result = backend
            .adapter
            .delete(
                &self.upstreams,
                &backend,
                self.session_request(
                    config,
                    &claims,
                    &resource,
                    request.headers(),
                    request.extensions(),
                    request_id,
                ),
            )
            .await;
        match result {
            Ok(()) => {
                // A built-in session this replica no longer lists ended on its own and was
                // counted then (see `reap_ended_sessions`); a remote one may be another
                // replica's, which counts it only where its DELETE succeeds.
                self.session_ended(config, &claims, backend.adapter.is_remote());
                Ok(response::empty(StatusCode::OK))
            }
            Err(error @ GatewayError::NotFound(_)) => {
                self.session_ended(config, &claims, false);
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
        let now = self.clock.unix();
        let claims = self.keys().open(token, now).ok();
        let trickles = claims
            .as_ref()
            .and_then(|claims| self.backend_for_session(config, &claims.backend))
            .is_none_or(|backend| backend.trickle);
        let answers = claims
            .as_ref()
            .is_some_and(|claims| claims.state.contains_key(super::create::ANSWER_EXPECTED));
        let methods = if trickles || answers {
            SESSION_METHODS
        } else {
            SESSION_METHODS_NO_PATCH
        };
        let mut response = response::empty(StatusCode::NO_CONTENT);
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static(methods));
        let accept_patch = match (trickles, answers) {
            (true, true) => Some("application/trickle-ice-sdpfrag, application/sdp"),
            (true, false) => Some(SDPFRAG),
            (false, true) => Some(SDP),
            (false, false) => None,
        };
        if let Some(accept_patch) = accept_patch {
            headers.insert(ACCEPT_PATCH, HeaderValue::from_static(accept_patch));
        }
        if is_preflight(request) {
            cors::preflight(headers, methods);
        }
        response
    }

    /// What an adapter needs to act on an opened session for this request.
    /// The owner replica a built-in session's request must be carried to, if another.
    fn carried_to<B>(&self, config: &Config, token: &str, request: &Request<B>) -> Option<Url> {
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path(), |p| p.as_str());
        self.owner_elsewhere(config, token, request.headers(), path)
    }

    pub(super) fn session_request<'a>(
        &self,
        config: &Config,
        claims: &'a SessionClaims,
        resource: &'a crate::backend::BackendUrl,
        headers: &'a HeaderMap,
        extensions: &http::Extensions,
        request_id: &'a str,
    ) -> SessionRequest<'a> {
        SessionRequest {
            resource,
            claims,
            client_authorization: headers.get(header::AUTHORIZATION),
            request_id,
            client_ip: super::create::client_address(config, headers, extensions),
            now: self.clock.unix(),
        }
    }

    /// Opens a session token; every failure is the same 404 and nothing goes upstream. A
    /// session bound to its subject also needs that subject's credential in `headers`.
    pub(super) fn open(
        &self,
        config: &Config,
        token: &str,
        headers: &HeaderMap,
        outcome: &mut Outcome,
    ) -> Result<
        (
            SessionClaims,
            std::sync::Arc<crate::backend::BackendDef>,
            crate::backend::BackendUrl,
        ),
        GatewayError,
    > {
        let not_found = || GatewayError::NotFound("session not found".into());
        let claims = self
            .keys()
            .open(token, self.clock.unix())
            .map_err(|_| not_found())?;
        outcome.route = Some(claims.route.clone());
        outcome.backend = Some(claims.backend.clone());
        let backend = self
            .backend_for_session(config, &claims.backend)
            .ok_or_else(not_found)?;
        let resource = crate::backend::origin::parse(&claims.resource).map_err(|_| not_found())?;
        super::identity::check_owner(
            config,
            &claims,
            headers.get(header::AUTHORIZATION),
            self.clock.unix(),
        )?;
        Ok((claims, backend, resource))
    }

    pub(super) fn with_retry_after(&self, config: &Config, error: GatewayError) -> GatewayError {
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
    pub(super) fn release(
        &self,
        backend: std::sync::Arc<crate::backend::BackendDef>,
        claims: SessionClaims,
        request_id: &str,
    ) {
        let upstreams = self.upstreams.clone();
        let request_id = request_id.to_owned();
        let now = self.clock.unix();
        tokio::spawn(async move {
            let Ok(resource) = crate::backend::origin::parse(&claims.resource) else {
                return;
            };
            let result = backend
                .adapter
                .delete(
                    &upstreams,
                    &backend,
                    SessionRequest {
                        resource: &resource,
                        claims: &claims,
                        client_authorization: None,
                        request_id: &request_id,
                        client_ip: None,
                        now,
                    },
                )
                .await;
            if let Err(error) = result {
                tracing::warn!(request_id, backend = %backend.id, %error, "could not release backend session");
            }
        });
    }
}

impl Gateway {
    /// RFC 9725 §4.6: a client may ask for ICE servers before it makes its offer (a
    /// non-trickling client needs TURN before it gathers). Only whipgate's own servers are
    /// known here, and only a client the route would admit gets their credentials.
    fn ice_links_for_options<B>(
        &self,
        config: &Config,
        kind: EndpointKind,
        stream: &StreamName,
        request: &Request<B>,
        response: &mut Response<Body>,
    ) {
        let now = self.clock.unix();
        let identities =
            super::identity::identify(config, request.headers().get(header::AUTHORIZATION), now);
        let host = super::create::request_host(request.uri(), request.headers());
        let facts = crate::routing::RequestFacts {
            kind,
            stream,
            host: host.as_deref(),
            headers: request.headers(),
            query: request.uri().query(),
            client_ip: super::create::client_address(
                config,
                request.headers(),
                request.extensions(),
            ),
            identities: &identities.accepted,
        };
        let Some(decision) = config.routes.decide(&facts) else {
            return;
        };
        let Ok(identity) = identities.admit(decision.route, kind, stream.as_str()) else {
            return;
        };
        let subject = identity
            .and_then(|i| i.subject.clone())
            .unwrap_or_else(|| hex(&self.random_bytes::<6>()));
        for server in super::ice::for_session(config, decision.route, &[], &subject, now) {
            if let Ok(value) = HeaderValue::from_str(&server.to_header_value()) {
                response.headers_mut().append(header::LINK, value);
            }
        }
    }
}

fn endpoint_options<B>(request: &Request<B>) -> Response<Body> {
    let mut response = response::empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(ENDPOINT_METHODS));
    headers.insert(frontdoor::ACCEPT_POST, HeaderValue::from_static(SDP));
    if is_preflight(request) {
        cors::preflight(headers, ENDPOINT_METHODS);
    }
    response
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// RFC 9725 §4.1: GET/HEAD on an endpoint answer 2xx without content; WHEP players probe
/// with HEAD and look for `Content-Type: application/sdp`.
fn endpoint_probe<B>(
    config: &Config,
    kind: EndpointKind,
    stream: &StreamName,
    request: &Request<B>,
) -> Result<Response<Body>, GatewayError> {
    let host = super::create::request_host(request.uri(), request.headers());
    let facts = crate::routing::RequestFacts {
        kind,
        stream,
        host: host.as_deref(),
        headers: request.headers(),
        query: request.uri().query(),
        client_ip: super::create::client_address(config, request.headers(), request.extensions()),
        identities: &[],
    };
    let method = request.method();
    if config.routes.decide(&facts).is_none() {
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
        .insert(frontdoor::ACCEPT_POST, HeaderValue::from_static(SDP));
    Ok(response)
}

fn is_preflight<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

pub(super) fn require_content_type(
    headers: &HeaderMap,
    expected: &str,
) -> Result<(), GatewayError> {
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

/// The request body, bounded in size (413) and in time (408: a client that stalls mid-body
/// cannot hold a connection and a task for the whole request timeout).
pub(super) async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    config: &Config,
) -> Result<Bytes, GatewayError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::time::timeout(
        config.server.body_read_timeout,
        read_body_within(headers, body, config.server.max_body_bytes),
    )
    .await
    .map_err(|_| GatewayError::RequestTimeout("the request body came too slowly".into()))?
}

async fn read_body_within<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, GatewayError>
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
pub(super) fn session_url(
    config: &Config,
    parts: &http::request::Parts,
    token: &str,
) -> Result<HeaderValue, GatewayError> {
    // Appended, not `format!`ed: this runs for every session created.
    let mut url = public_base(config, parts);
    url.reserve("/session/".len() + token.len());
    url.push_str("/session/");
    url.push_str(token);
    HeaderValue::try_from(url)
        .map_err(|_| GatewayError::Internal("could not build the session URL".into()))
}

/// Where clients reach this gateway: `public_url`, or the request's own scheme and host.
pub(super) fn public_base(config: &Config, parts: &http::request::Parts) -> String {
    match &config.server.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let scheme = if parts
                .extensions
                .get::<super::Arrival>()
                .is_some_and(|arrival| arrival.tls)
            {
                "https://"
            } else {
                "http://"
            };
            let authority = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| h.parse::<http::uri::Authority>().is_ok())
            });
            match authority {
                Some(authority) => {
                    let mut base = String::with_capacity(scheme.len() + authority.len() + 64);
                    base.push_str(scheme);
                    base.push_str(authority);
                    base
                }
                None => format!("{scheme}{}", config.server.listen),
            }
        }
    }
}

pub(super) fn insert_etag(headers: &mut HeaderMap, upstream: Option<&str>) {
    if let Ok(value) = HeaderValue::from_str(&frontdoor::gateway_etag(upstream)) {
        headers.insert(header::ETAG, value);
    }
}
