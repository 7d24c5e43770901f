//! POST /whip/{stream} and POST /whep/{stream}: route, place, fail over, seal the session.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as HttpBody;

use super::handlers::{insert_etag, read_body, require_content_type, session_url, Outcome};
use super::response::Body;
use super::{hex, Arrival, Gateway};
use crate::backend::{AttemptError, BackendDef, CreateRequest};
use crate::config::Config;
use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::{client_ip, BackendId, Decision, RequestFacts, StreamName};
use crate::sdp::{self, Offer, SdpError};
use crate::session::{LiveSession, SessionClaims};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The key in a session's sealed state saying that the backend made the offer and the
/// client's `PATCH application/sdp` answer is expected.
pub(super) const ANSWER_EXPECTED: &str = "whipgate.answer";

/// What went wrong with the candidates tried so far; decides the final error.
#[derive(Default)]
struct Misses {
    /// Refused, timed out, 5xx: another backend may do.
    unavailable: Option<GatewayError>,
    /// The soonest any of those backends said it may serve again (its `Retry-After`).
    soonest_retry: Option<std::time::Duration>,
    /// Skipped without a request: circuit open, full, resting.
    skipped: Vec<String>,
    /// The backend's SDP policy leaves nothing acceptable.
    refused_by_policy: Option<SdpError>,
    /// WHEP: the backend has no live publisher for the stream.
    not_live: Option<GatewayError>,
    /// A legacy empty POST reached backends that cannot make an offer.
    cannot_offer: bool,
    /// The last backend passed over and why, for the failover metric.
    last_skip: Option<(String, &'static str)>,
}

struct Ctx<'a> {
    /// The authenticated client, and whether its session is bound to it.
    subject: Option<&'a str>,
    tier: Option<&'a str>,
    client_ip: Option<std::net::IpAddr>,
    /// The id the session gets, whichever backend takes it.
    sid: String,
    bind_subject: bool,
    kind: EndpointKind,
    stream: &'a StreamName,
    /// `None` for a legacy player's empty POST: the backend makes the offer.
    offer: Option<&'a Offer>,
    /// The body `offer` was prepared from, forwarded as is when no policy changes it.
    offer_body: &'a Bytes,
    parts: &'a http::request::Parts,
    request_id: &'a str,
}

impl Gateway {
    pub(super) async fn create<B>(
        &self,
        config: &Arc<Config>,
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
        let (parts, body) = request.into_parts();
        let client = client_address(config, &parts.headers, &parts.extensions);
        let host = request_host(&parts.uri, &parts.headers);
        let identities = super::identity::identify(
            config,
            parts.headers.get(header::AUTHORIZATION),
            self.clock.unix(),
        );
        let facts = RequestFacts {
            kind,
            stream: &stream,
            host: host.as_deref(),
            headers: &parts.headers,
            query: parts.uri.query(),
            client_ip: client,
            identities: &identities.accepted,
        };
        let decision = config.routes.decide(&facts).ok_or_else(|| {
            GatewayError::NotFound(format!("no route serves {kind} stream {stream}"))
        })?;
        outcome.route = Some(decision.route.id.clone());
        let identity = identities.admit(decision.route, kind, stream.as_str())?;
        let subject = identity.and_then(|i| i.subject.as_deref());
        let tier = identity.and_then(|i| i.tier.as_deref());
        // Held until this request's session is in the registry (or it failed), so that
        // concurrent requests cannot all pass the check.
        let _any_place = self
            .registry
            .reserve_any(config.server.max_live_sessions)
            .ok_or_else(|| GatewayError::Unavailable {
                reason: format!(
                    "this gateway holds its limit of {} live sessions",
                    config.server.max_live_sessions
                ),
                retry_after: config.server.retry_after,
            })?;
        let _subject_place = match (config.server.max_sessions_per_subject, subject) {
            (Some(limit), Some(subject)) => Some(
                self.registry
                    .reserve_for_subject(subject, limit)
                    .ok_or_else(|| GatewayError::TooManyRequests {
                        reason: format!("this client already holds {limit} live sessions"),
                        retry_after: config.server.retry_after,
                    })?,
            ),
            _ => None,
        };
        let body = read_body(&parts.headers, body, config).await?;
        // Checked once; the offer's lines then share the body instead of copying it.
        let text = ByteString::try_from(body.clone())
            .map_err(|_| GatewayError::BadRequest("malformed SDP: not UTF-8".into()))?;
        // A WHEP player that POSTs nothing asks the server to offer (draft-murillo-whep-01,
        // still used by players written for Cloudflare's first WHEP).
        let offer = if kind == EndpointKind::Whep && text.trim().is_empty() {
            None
        } else {
            Some(
                sdp::prepare_shared_offer(kind, text, config.server.sdp_validation)
                    .inspect_err(|error| self.count_rejection(error))?,
            )
        };
        let ctx = Ctx {
            subject,
            tier,
            client_ip: client,
            sid: hex(&self.random_bytes::<12>()),
            bind_subject: decision.route.bind_sessions,
            kind,
            stream: &stream,
            offer: offer.as_ref(),
            offer_body: &body,
            parts: &parts,
            request_id,
        };

        let mut misses = Misses::default();
        let mut tried: HashSet<BackendId> = HashSet::new();
        if let Some(response) = self
            .try_candidates(
                config,
                config,
                &decision,
                &ctx,
                &mut tried,
                &mut misses,
                outcome,
            )
            .await?
        {
            return Ok(response);
        }
        // Viewers follow publishers: a reload or failover may have left the publisher where
        // the previous table put it.
        if kind == EndpointKind::Whep && misses.not_live.is_some() {
            if let Some(previous) = self.previous.load_full() {
                if let Some(old) = previous.routes.decide(&facts) {
                    if let Some(response) = self
                        .try_candidates(
                            config,
                            &previous,
                            &old,
                            &ctx,
                            &mut tried,
                            &mut misses,
                            outcome,
                        )
                        .await?
                    {
                        return Ok(response);
                    }
                }
            }
        }
        if misses.unavailable.is_none() && misses.not_live.is_none() && misses.skipped.is_empty() {
            if let Some(refusal) = &misses.refused_by_policy {
                self.count_rejection(refusal);
            }
        }
        Err(final_error(config, kind, misses))
    }

    fn count_rejection(&self, error: &SdpError) {
        self.metrics
            .sdp_rejections
            .with_label_values(&[error.reason()])
            .inc();
    }

    /// Tries `decision`'s candidates (defined in `table`) not tried yet; `Some` on success.
    #[allow(clippy::too_many_arguments)]
    async fn try_candidates(
        &self,
        config: &Arc<Config>,
        table: &Arc<Config>,
        decision: &Decision<'_>,
        ctx: &Ctx<'_>,
        tried: &mut HashSet<BackendId>,
        misses: &mut Misses,
        outcome: &mut Outcome,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        for (backend_id, reason) in &decision.candidates {
            if !tried.insert(backend_id.clone()) {
                continue;
            }
            let Some(backend) = table.backends.get(backend_id) else {
                continue;
            };
            if !backend.serves(ctx.kind) {
                continue;
            }
            if self.is_draining(backend) {
                misses.skipped.push(format!("{} draining", backend.id));
                continue;
            }
            if let Err(why) = self.health.check(&backend.id.0, self.clock.instant()) {
                misses.skipped.push(format!("{} {why}", backend.id));
                continue;
            }
            // Held until the session is in the registry (or the attempt failed), so that
            // concurrent requests cannot all pass a check made before any of them inserts.
            let _place = match backend.max_sessions {
                Some(max) => match self.registry.reserve(&backend.id.0, max) {
                    Some(place) => Some(place),
                    None => {
                        misses
                            .skipped
                            .push(format!("{} full ({max} sessions)", backend.id));
                        continue;
                    }
                },
                None => None,
            };
            let policy = backend.sdp.overridden_by(&decision.route.sdp);
            tracing::debug!(request_id = ctx.request_id, backend = %backend.id, %reason, "trying backend");
            let Some(client_offer) = ctx.offer else {
                if backend.adapter.makes_offers() {
                    let Some(created) = self
                        .attempt(
                            config,
                            backend,
                            decision,
                            ctx,
                            Bytes::new(),
                            outcome,
                            misses,
                        )
                        .await?
                    else {
                        continue;
                    };
                    return self
                        .counter_offered(config, backend, decision, ctx, created, &policy)
                        .map(Some);
                }
                misses.cannot_offer = true;
                continue;
            };
            let upstream_offer = match client_offer.rewrite(&policy) {
                Ok(rewritten) => rewritten,
                Err(error) => {
                    tracing::debug!(request_id = ctx.request_id, backend = %backend.id, %error, "offer refused by the backend's SDP policy");
                    misses.refused_by_policy = Some(error);
                    misses.last_skip = Some((backend.id.0.clone(), "sdp_policy"));
                    continue;
                }
            };
            let offer = if upstream_offer.is_unchanged() {
                ctx.offer_body.clone()
            } else {
                Bytes::from(upstream_offer.text())
            };
            let Some(created) = self
                .attempt(config, backend, decision, ctx, offer, outcome, misses)
                .await?
            else {
                continue;
            };
            if created.counter_offer {
                return self
                    .counter_offered(config, backend, decision, ctx, created, &policy)
                    .map(Some);
            }
            let answer = match ByteString::try_from(created.answer.clone())
                .map_err(|_| crate::sdp::SdpError::Malformed("the answer is not UTF-8".into()))
                .and_then(|answer| upstream_offer.accept_answer_shared(&answer, &policy))
            {
                Ok(None) => created.answer.clone(),
                Ok(Some(rewritten)) => Bytes::from(rewritten),
                Err(error) => {
                    let claims = self.claims(config, backend, decision, ctx, &created);
                    self.release(backend.clone(), claims, ctx.request_id);
                    return Err(GatewayError::BadGateway(format!(
                        "backend {} gave an unusable answer: {error}",
                        backend.id
                    )));
                }
            };
            return self
                .created(config, backend, decision, ctx, created, answer)
                .map(Some);
        }
        Ok(None)
    }

    /// One backend's attempt at the session; `None` when the next candidate should try.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        config: &Config,
        backend: &Arc<BackendDef>,
        decision: &Decision<'_>,
        ctx: &Ctx<'_>,
        offer: Bytes,
        outcome: &mut Outcome,
        misses: &mut Misses,
    ) -> Result<Option<crate::backend::Created>, GatewayError> {
        if let Some((from, reason)) = misses.last_skip.take() {
            self.metrics
                .failovers
                .with_label_values(&[from.as_str(), backend.id.0.as_str(), reason])
                .inc();
        }
        if outcome.backend.is_some() {
            outcome.failovers += 1;
        }
        outcome.backend = Some(backend.id.0.clone());
        let attempt = backend
            .adapter
            .create(
                &self.upstreams,
                backend.as_ref(),
                CreateRequest {
                    kind: ctx.kind,
                    stream: ctx.stream,
                    captures: &decision.captures,
                    offer,
                    client_authorization: ctx.parts.headers.get(header::AUTHORIZATION),
                    request_id: ctx.request_id,
                    sid: &ctx.sid,
                    route: &decision.route.id,
                    subject: ctx.subject,
                    tier: ctx.tier,
                    client_ip: ctx.client_ip,
                    now: self.clock.unix(),
                },
            )
            .await;
        match attempt {
            Ok(created) => {
                self.health.record_success(&backend.id.0);
                Ok(Some(created))
            }
            Err(AttemptError {
                error: error @ GatewayError::NotLive { .. },
                ..
            }) => {
                misses.not_live = Some(error);
                misses.last_skip = Some((backend.id.0.clone(), "not_live"));
                Ok(None)
            }
            Err(failure) if failure.retryable => {
                tracing::warn!(
                    request_id = ctx.request_id,
                    backend = %backend.id,
                    reason = %failure.error,
                    "backend failed; trying the next candidate, if any"
                );
                self.health.record_failure(
                    &backend.id.0,
                    self.clock.instant(),
                    failure.error.retry_after(),
                    backend.circuit,
                );
                let reason = match failure.error {
                    GatewayError::GatewayTimeout(_) => "timeout",
                    _ => "unavailable",
                };
                if let Some(wait) = failure.error.retry_after().filter(|w| !w.is_zero()) {
                    misses.soonest_retry = Some(misses.soonest_retry.map_or(wait, |w| w.min(wait)));
                }
                misses.unavailable = Some(failure.error);
                misses.last_skip = Some((backend.id.0.clone(), reason));
                Ok(None)
            }
            Err(failure) => Err(self.with_retry_after(config, failure.error)),
        }
    }

    /// A session whose backend made the offer: the client gets it, as a 406 counter-offer
    /// to its own offer (WHEP-04) or as the 201 a legacy empty POST expects, and answers
    /// with `PATCH application/sdp`. An offer no player could answer is the backend's error.
    fn counter_offered(
        &self,
        config: &Config,
        backend: &Arc<BackendDef>,
        decision: &Decision<'_>,
        ctx: &Ctx<'_>,
        mut created: crate::backend::Created,
        policy: &sdp::Policy,
    ) -> Result<Response<Body>, GatewayError> {
        let offer = match std::str::from_utf8(&created.answer)
            .map_err(|_| SdpError::Malformed("the offer is not UTF-8".into()))
            .and_then(|offer| sdp::check_server_offer(ctx.kind, offer, policy.answer.as_ref()))
        {
            Ok(Cow::Borrowed(_)) => created.answer.clone(),
            Ok(Cow::Owned(rewritten)) => Bytes::from(rewritten),
            Err(error) => {
                let claims = self.claims(config, backend, decision, ctx, &created);
                self.release(backend.clone(), claims, ctx.request_id);
                return Err(GatewayError::BadGateway(format!(
                    "backend {} made an unusable offer: {error}",
                    backend.id
                )));
            }
        };
        created.state.insert(ANSWER_EXPECTED.into(), String::new());
        let trickles = backend.trickle;
        let mut response = self.created(config, backend, decision, ctx, created, offer)?;
        if ctx.offer.is_some() {
            *response.status_mut() = StatusCode::NOT_ACCEPTABLE;
        }
        response.headers_mut().insert(
            "accept-patch",
            HeaderValue::from_static(if trickles {
                "application/trickle-ice-sdpfrag, application/sdp"
            } else {
                SDP
            }),
        );
        Ok(response)
    }

    /// What the session token will hold.
    fn claims(
        &self,
        config: &Config,
        backend: &BackendDef,
        decision: &Decision<'_>,
        ctx: &Ctx<'_>,
        created: &crate::backend::Created,
    ) -> SessionClaims {
        let now = self.clock.unix();
        let mut state = created.state.clone();
        if let (false, Some(own)) = (backend.adapter.is_remote(), &config.server.internal_url) {
            // Only this process's SFU holds the session: other replicas carry its requests here.
            state.insert(super::forward::OWNER.into(), own.to_string());
        }
        SessionClaims {
            sid: ctx.sid.clone(),
            backend: backend.id.0.clone(),
            resource: created.resource.to_string(),
            kind: ctx.kind,
            stream: ctx.stream.as_str().to_owned(),
            route: decision.route.id.clone(),
            created: now,
            expires: now.saturating_add(config.server.session_ttl.as_secs()),
            subject: ctx.subject.filter(|_| ctx.bind_subject).map(str::to_owned),
            state,
        }
    }

    fn created(
        &self,
        config: &Config,
        backend: &Arc<BackendDef>,
        decision: &Decision<'_>,
        ctx: &Ctx<'_>,
        created: crate::backend::Created,
        answer: Bytes,
    ) -> Result<Response<Body>, GatewayError> {
        let now = self.clock.unix();
        let claims = self.claims(config, backend, decision, ctx, &created);
        let token = self.keys().seal(&claims, self.random_bytes::<12>());
        let location = session_url(config, ctx.parts, &token)?;
        let labels = [
            claims.backend.as_str(),
            claims.route.as_str(),
            ctx.kind.as_str(),
        ];
        self.metrics.sessions_started.with(&labels, |c| c.inc());
        self.metrics.sessions_live.with(&labels, |g| g.inc());
        // The token is sealed: the registry takes the claims' strings instead of copies,
        // but for the two read below (the session id and the adapter's state).
        self.registry.insert(
            claims.sid.clone(),
            LiveSession {
                resource: claims.resource,
                state: claims.state.clone(),
                backend: claims.backend,
                stream: claims.stream,
                subject: ctx.subject.map(str::to_owned),
                route: claims.route,
                kind: ctx.kind,
                created: now,
            },
        );
        if ctx.kind == EndpointKind::Whip {
            super::relay::start_if_relayed(
                self,
                backend,
                decision.route,
                ctx.stream,
                &created.resource,
                &decision.captures,
            );
        }
        let mut response = Response::new(super::response::Body::new(answer));
        *response.status_mut() = StatusCode::CREATED;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
        headers.insert(header::LOCATION, location);
        insert_etag(headers, created.etag.as_deref());
        let ice_servers = super::ice::for_session(
            config,
            decision.route,
            &created.ice_servers,
            ctx.subject.unwrap_or(&claims.sid),
            now,
        );
        for server in &ice_servers {
            if let Ok(value) = HeaderValue::from_str(&server.to_header_value()) {
                headers.append(header::LINK, value);
            }
        }
        if backend.trickle {
            headers.insert(
                crate::frontdoor::ACCEPT_PATCH,
                HeaderValue::from_static(SDPFRAG),
            );
        }
        if ctx.kind == EndpointKind::Whep {
            let base = super::handlers::public_base(config, ctx.parts);
            if let Some(link) =
                super::events::link(&base, &token, backend.adapter.is_remote(), &claims.state)
            {
                headers.append(header::LINK, link);
            }
            if backend.adapter.chooses_layers() {
                if let Some(link) = super::events::layer_link(&base, &token) {
                    headers.append(header::LINK, link);
                }
            }
        }
        Ok(response)
    }
}

fn final_error(config: &Config, kind: EndpointKind, misses: Misses) -> GatewayError {
    if let Some(error) = misses.unavailable {
        return GatewayError::Unavailable {
            reason: format!("no backend could serve this stream (last: {error})"),
            // A client told to come back before every backend said it may serve would
            // only find them resting.
            retry_after: misses
                .soonest_retry
                .map_or(config.server.retry_after, |wait| {
                    wait.max(config.server.retry_after)
                }),
        };
    }
    if let Some(GatewayError::NotLive { reason, .. }) = misses.not_live {
        return GatewayError::NotLive {
            reason,
            retry_after: config.server.not_live_retry_after,
        };
    }
    if misses.cannot_offer && misses.skipped.is_empty() {
        return GatewayError::BadRequest(
            "an empty offer asks the server to offer, and this stream's backends cannot: POST an SDP offer"
                .into(),
        );
    }
    if !misses.skipped.is_empty() {
        return GatewayError::Unavailable {
            reason: format!(
                "no backend can take this stream now: {}",
                misses.skipped.join("; ")
            ),
            retry_after: config.server.retry_after,
        };
    }
    if let Some(refusal) = misses.refused_by_policy {
        return refusal.into();
    }
    GatewayError::Unavailable {
        reason: format!("no backend of this route serves {kind}"),
        retry_after: config.server.retry_after,
    }
}

/// The client's address: the connection's peer, or what a trusted proxy in front says.
pub(super) fn client_address(
    config: &Config,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> Option<std::net::IpAddr> {
    let peer = extensions.get::<Arrival>()?.peer.ip();
    Some(client_ip(
        peer,
        headers,
        &config.server.trusted_proxies,
        config.server.forwarded_header,
    ))
}

/// The request's host, lower case, without port.
pub(super) fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let raw = uri.host().map(str::to_owned).or_else(|| {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let authority: http::uri::Authority = host.parse().ok()?;
        Some(authority.host().to_owned())
    })?;
    Some(raw.to_ascii_lowercase())
}
