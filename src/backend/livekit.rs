//! Kind `livekit`: LiveKit server's native WHIP (`mode = "whip"`, livekit-server >= 1.9) or
//! its Ingress service (`mode = "ingress"`, self-hosted or Cloud). LiveKit has no WHEP.
//!
//! `whip` signs an HS256 participant token per session (identity unique to the session,
//! room from the template, publish only, short-lived) and signs another with the same
//! identity and room for PATCH and DELETE, so only those (and the ETag) are sealed, never a
//! token. `ingress`
//! creates a WHIP_INPUT ingress per session through the Twirp API, publishes to it with its
//! stream key, and deletes it after the session's DELETE.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use url::Url;

use super::broker::{self, Retry};
use super::exchange::{self, Target};
use super::{
    Adapter, AllowedHost, AttemptError, BackendDef, BoxFuture, CreateRequest, Created, KeyError,
    KindKeys, Patched, Secret, SessionRequest, SessionTarget, Upstreams,
};
use crate::error::GatewayError;
use crate::frontdoor::UpstreamIfMatch;
use crate::kind::EndpointKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Whip,
    Ingress,
}

#[derive(Debug)]
pub struct Livekit {
    url: Url,
    api_key: String,
    api_secret: Secret,
    room: NameTemplate,
    mode: Mode,
    token_ttl: Duration,
}

/// The routes.toml keys of this kind, besides those every kind takes.
pub(super) const KEYS: &[&str] = &[
    "url",
    "api_key",
    "api_secret_env",
    "api_secret_file",
    "room",
    "mode",
    "token_ttl",
];

pub(super) fn build(keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    // Every LiveKit deployment has its own origin (a Cloud project's or a self-hosted
    // server's), so there is no useful default.
    let url = keys
        .url("url")?
        .ok_or_else(|| keys.error("kind = \"livekit\" needs url (the server's origin)"))?;
    let api_key = keys.required_string("api_key")?;
    let api_secret = keys.required_secret("api_secret")?;
    let room = match keys.string("room")? {
        None => NameTemplate::parse("{stream}"),
        Some(raw) => NameTemplate::parse(&raw),
    }
    .map_err(|e| keys.error(format!("room {e}")))?;
    let mode = keys.value::<Mode>("mode")?.unwrap_or(Mode::Whip);
    let token_ttl = keys
        .value::<humantime_serde::Serde<Duration>>("token_ttl")?
        .map_or(Duration::from_secs(600), |d| *d)
        .clamp(Duration::from_secs(60), Duration::from_secs(24 * 3600));
    Ok(Arc::new(Livekit {
        url,
        api_key,
        api_secret,
        room,
        mode,
        token_ttl,
    }))
}

/// The grants of a LiveKit access token (`video` claim), camelCase as LiveKit reads them.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_join: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_admin: Option<bool>,
}

/// A LiveKit access token's claims, in the order LiveKit's SDKs write them.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub nbf: u64,
    pub iat: u64,
    pub exp: u64,
    pub video: VideoGrant,
}

impl AccessClaims {
    /// A publisher's token for native WHIP: join `room` as `identity`, publish, no more.
    pub fn publisher(api_key: &str, identity: &str, room: &str, now: u64, ttl: Duration) -> Self {
        Self {
            iss: api_key.to_owned(),
            sub: Some(identity.to_owned()),
            name: Some("whipgate".to_owned()),
            nbf: now,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            video: VideoGrant {
                room_join: Some(true),
                room: Some(room.to_owned()),
                can_publish: Some(true),
                can_subscribe: Some(false),
                ingress_admin: None,
            },
        }
    }

    /// A token for the Ingress API only.
    pub fn ingress_admin(api_key: &str, now: u64, ttl: Duration) -> Self {
        Self {
            iss: api_key.to_owned(),
            sub: None,
            name: None,
            nbf: now,
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            video: VideoGrant {
                ingress_admin: Some(true),
                ..VideoGrant::default()
            },
        }
    }

    /// HS256 with the API secret, the only algorithm LiveKit accepts.
    pub fn sign(&self, secret: &str) -> Result<String, GatewayError> {
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|_| GatewayError::Internal("could not sign a LiveKit token".into()))
    }
}

/// What deleting an ingress needs, owned, so that it can run on a task of its own.
struct IngressCleanup {
    url: Url,
    api_key: String,
    api_secret: Secret,
    token_ttl: Duration,
}

impl IngressCleanup {
    async fn run(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ingress_id: &str,
        now: u64,
    ) -> Result<(), GatewayError> {
        let admin = AccessClaims::ingress_admin(&self.api_key, now, self.token_ttl);
        let authorization = exchange::bearer(&admin.sign(self.api_secret.expose())?)
            .ok_or_else(|| GatewayError::Internal("unusable LiveKit token".into()))?;
        let url = self
            .url
            .join("/twirp/livekit.Ingress/DeleteIngress")
            .map_err(|_| GatewayError::Internal("bad LiveKit URL".into()))?;
        let body = serde_json::json!({ "ingress_id": ingress_id });
        let response = broker::call(
            cx,
            backend,
            None,
            "delete_ingress",
            Method::POST,
            url,
            broker::json_headers(Some(authorization)),
            Bytes::from(body.to_string()),
            Retry::Idempotent,
        )
        .await
        .map_err(|e| e.error)?;
        if response.status == http::StatusCode::NOT_FOUND {
            return Ok(());
        }
        broker::expect_success(backend, "delete_ingress", &response).map_err(|e| e.error)
    }
}

/// `CreateIngress`'s answer (snake_case, every field present; only these are read).
#[derive(Deserialize)]
struct IngressInfo {
    ingress_id: String,
    stream_key: String,
    url: String,
}

const IDENTITY: &str = "identity";
const ROOM: &str = "room";
const INGRESS: &str = "ingress";
const STREAM_KEY: &str = "key";
const ETAG: &str = "etag";

impl Livekit {
    fn bearer(&self, claims: &AccessClaims) -> Result<http::HeaderValue, GatewayError> {
        exchange::bearer(&claims.sign(self.api_secret.expose())?)
            .ok_or_else(|| GatewayError::Internal("unusable LiveKit token".into()))
    }

    fn twirp(&self, method: &str) -> Result<Url, AttemptError> {
        self.url
            .join(&format!("/twirp/livekit.Ingress/{method}"))
            .map_err(|_| AttemptError::fatal(GatewayError::Internal("bad LiveKit URL".into())))
    }

    async fn create_session(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        let identity = format!("whipgate-{}", request.sid);
        let room = self
            .room
            .expand(request.stream.as_str(), request.captures)
            .map_err(|e| AttemptError::fatal(GatewayError::BadRequest(e)))?;
        let mut created = match self.mode {
            Mode::Whip => {
                let claims = AccessClaims::publisher(
                    &self.api_key,
                    &identity,
                    &room,
                    request.now,
                    self.token_ttl,
                );
                let url = self.url.join("/whip/v1").map_err(|_| {
                    AttemptError::fatal(GatewayError::Internal("bad LiveKit URL".into()))
                })?;
                let authorization = self.bearer(&claims).map_err(AttemptError::fatal)?;
                let target = Target::new(url, Some(authorization), request.request_id);
                exchange::post_offer(cx, backend, request.kind, &target, request.offer).await?
            }
            Mode::Ingress => {
                self.create_ingress(cx, backend, request, &identity, &room)
                    .await?
            }
        };
        created.state.insert(IDENTITY.into(), identity);
        created.state.insert(ROOM.into(), room);
        if let Some(etag) = &created.etag {
            created.state.insert(ETAG.into(), etag.clone());
        }
        Ok(created)
    }

    async fn create_ingress(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        request: CreateRequest<'_>,
        identity: &str,
        room: &str,
    ) -> Result<Created, AttemptError> {
        let admin = AccessClaims::ingress_admin(&self.api_key, request.now, self.token_ttl);
        let authorization = self.bearer(&admin).map_err(AttemptError::fatal)?;
        let body = serde_json::json!({
            "input_type": "WHIP_INPUT",
            "name": format!("whipgate:{}", request.stream),
            "room_name": room,
            "participant_identity": identity,
            "participant_name": request.stream.as_str(),
            "enable_transcoding": false,
        });
        let response = broker::call(
            cx,
            backend,
            None,
            "create_ingress",
            Method::POST,
            self.twirp("CreateIngress")?,
            broker::json_headers(Some(authorization.clone())),
            Bytes::from(body.to_string()),
            Retry::Never,
        )
        .await?;
        let ingress: IngressInfo = broker::json(backend, "create_ingress", &response)?;
        let published = match Url::parse(&ingress.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                let host = AllowedHost::of(&url);
                let mut target = Target::new(
                    url,
                    exchange::bearer(&ingress.stream_key),
                    request.request_id,
                );
                target.extra_host = host.as_ref();
                exchange::post_offer(cx, backend, request.kind, &target, request.offer).await
            }
            _ => Err(AttemptError::fatal(GatewayError::BadGateway(format!(
                "backend {}: CreateIngress gave no usable WHIP URL",
                backend.id
            )))),
        };
        match published {
            Ok(mut created) => {
                created.state.insert(INGRESS.into(), ingress.ingress_id);
                created.state.insert(STREAM_KEY.into(), ingress.stream_key);
                Ok(created)
            }
            Err(error) => {
                // The ingress was made for this session only: do not leave it behind. On a
                // task of its own, so that the client's request timeout cannot cancel it.
                let cleanup = IngressCleanup {
                    url: self.url.clone(),
                    api_key: self.api_key.clone(),
                    api_secret: self.api_secret.clone(),
                    token_ttl: self.token_ttl,
                };
                let (cx, backend) = (cx.clone(), backend.clone());
                let (ingress_id, now) = (ingress.ingress_id, request.now);
                tokio::spawn(async move {
                    if let Err(error) = cleanup.run(&cx, &backend, &ingress_id, now).await {
                        broker::log_cleanup_failure(&backend, "delete_ingress", &error);
                    }
                });
                Err(error)
            }
        }
    }

    async fn delete_ingress(
        &self,
        cx: &Upstreams,
        backend: &BackendDef,
        ingress_id: &str,
        now: u64,
    ) -> Result<(), GatewayError> {
        IngressCleanup {
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
            token_ttl: self.token_ttl,
        }
        .run(cx, backend, ingress_id, now)
        .await
    }

    /// The credential of a session's PATCH and DELETE: a fresh token for the same identity
    /// and room (native WHIP), or the ingress's stream key.
    fn credential_target(
        &self,
        session: &SessionRequest<'_>,
    ) -> Result<SessionTarget, GatewayError> {
        let state = &session.claims.state;
        let (authorization, configured) = match (self.mode, state.get(STREAM_KEY)) {
            (Mode::Ingress, Some(key)) => (exchange::bearer(key), false),
            _ => {
                let missing = || GatewayError::NotFound("session not found".into());
                let identity = state.get(IDENTITY).ok_or_else(missing)?;
                let room = state.get(ROOM).ok_or_else(missing)?;
                let claims = AccessClaims::publisher(
                    &self.api_key,
                    identity,
                    room,
                    session.now,
                    self.token_ttl,
                );
                (Some(self.bearer(&claims)?), true)
            }
        };
        Ok(SessionTarget {
            url: session.resource.clone(),
            authorization,
            passthrough: false,
            configured,
        })
    }
}

impl Adapter for Livekit {
    fn kind(&self) -> &'static str {
        "livekit"
    }

    fn serves(&self, endpoint: EndpointKind) -> bool {
        endpoint == EndpointKind::Whip
    }

    /// LiveKit's ingress answers a trickle PATCH with 405 (livekit/ingress#236).
    fn trickle(&self) -> bool {
        self.mode == Mode::Whip
    }

    fn hosts(&self) -> Vec<AllowedHost> {
        AllowedHost::of(&self.url).into_iter().collect()
    }

    fn placeholders(&self, _endpoint: EndpointKind) -> Vec<String> {
        self.room.captures()
    }

    /// livekit-server answers `GET /` with 200 "OK" while it runs.
    fn health_url(&self) -> Option<Url> {
        self.url.join("/").ok()
    }

    fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Whip => "native WHIP at /whip/v1, a participant token per session",
            Mode::Ingress => "an ingress (WHIP_INPUT) per session",
        };
        format!(
            "livekit: {mode}, room {}, WHIP only; {}",
            self.room.raw,
            self.url.origin().ascii_serialization()
        )
    }

    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>> {
        Box::pin(self.create_session(cx, backend, request))
    }

    fn session_target(&self, session: &SessionRequest<'_>) -> Result<SessionTarget, GatewayError> {
        self.credential_target(session)
    }

    fn patch<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        body: Bytes,
        if_match: &'a UpstreamIfMatch,
    ) -> BoxFuture<'a, Result<Patched, GatewayError>> {
        Box::pin(async move {
            let target = self
                .session_target(&session)?
                .exchange(backend, session.request_id);
            // LiveKit answers 428 to a PATCH without If-Match; for trickle it compares
            // nothing, so a client that sent none gets the session's own ETag sent for it.
            let remembered = match if_match {
                UpstreamIfMatch::Absent | UpstreamIfMatch::NoneUpstream => session
                    .claims
                    .state
                    .get(ETAG)
                    .map(|etag| UpstreamIfMatch::Value(etag.clone())),
                _ => None,
            };
            let if_match = remembered.as_ref().unwrap_or(if_match);
            exchange::patch(cx, backend, &target, body, if_match).await
        })
    }

    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let deleted = super::remote_delete(self, cx, backend, &session).await;
            if let Some(ingress) = session.claims.state.get(INGRESS) {
                if let Err(error) = self.delete_ingress(cx, backend, ingress, session.now).await {
                    broker::log_cleanup_failure(backend, "delete_ingress", &error);
                }
            }
            deleted
        })
    }
}

/// A name built from the stream and a route's regex captures (`{stream}`, `{tenant}`), taken
/// as they are: room names are not URLs.
#[derive(Debug, Clone)]
pub struct NameTemplate {
    raw: String,
}

impl NameTemplate {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or("has an unclosed {placeholder}")?;
            let name = &rest[open + 1..open + close];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("has a bad placeholder {{{name}}}"));
            }
            rest = &rest[open + close + 1..];
        }
        if raw.is_empty() {
            return Err("is empty".into());
        }
        Ok(Self {
            raw: raw.to_owned(),
        })
    }

    /// Placeholders other than `{stream}`.
    pub fn captures(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.raw.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let name = &rest[open + 1..open + close];
            if name != "stream" {
                names.push(name.to_owned());
            }
            rest = &rest[open + close + 1..];
        }
        names
    }

    /// One pass over the template: text substituted in is never read again, so a stream
    /// name holding `{tenant}` or `{` stays as it is.
    pub fn expand(&self, stream: &str, captures: &[(String, String)]) -> Result<String, String> {
        let mut out = String::with_capacity(self.raw.len() + stream.len());
        let mut rest = self.raw.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                return Err("has an unclosed {placeholder}".into());
            };
            let name = &rest[open + 1..open + close];
            let value = if name == "stream" {
                Some(stream)
            } else {
                captures
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            out.push_str(value.ok_or_else(|| {
                format!("room placeholder {{{name}}} is not filled by the route")
            })?);
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The signed fixture of ../shared/vendor-contracts.md (2.1), whose header is
    /// `{"alg","typ"}`; jsonwebtoken writes `{"typ","alg"}`, so the payload segment must be
    /// byte for byte LiveKit's and the signature must verify.
    #[test]
    fn participant_token_matches_the_documented_fixture() {
        let fixture = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBUEl4eHh4Iiwic3ViIjoid2hpcC1zZXNzLTEiLCJuYW1lIjoiT0JTIiwibmJmIjoxNzk1NTAwMDAwLCJpYXQiOjE3OTU1MDAwMDAsImV4cCI6MTc5NTUwMDYwMCwidmlkZW8iOnsicm9vbUpvaW4iOnRydWUsInJvb20iOiJkZW1vIiwiY2FuUHVibGlzaCI6dHJ1ZSwiY2FuU3Vic2NyaWJlIjpmYWxzZX19.jVE4njZ8ThcfnrTaFRyMf1B29IzvNN8SRMC2dLDIveM";
        let secret = "whipgate-fixture-secret-0123456789abcdef";
        let mut claims = AccessClaims::publisher(
            "APIxxxx",
            "whip-sess-1",
            "demo",
            1_795_500_000,
            Duration::from_secs(600),
        );
        claims.name = Some("OBS".into());
        let token = claims.sign(secret).unwrap();
        assert_eq!(
            token.split('.').nth(1),
            fixture.split('.').nth(1),
            "payload differs from LiveKit's"
        );
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let ours = jsonwebtoken::decode::<AccessClaims>(&token, &key, &validation).unwrap();
        let theirs = jsonwebtoken::decode::<AccessClaims>(fixture, &key, &validation).unwrap();
        assert_eq!(ours.claims, theirs.claims);
    }

    #[test]
    fn admin_token_payload_matches_the_documented_fixture() {
        let fixture_payload = "eyJpc3MiOiJBUEl4eHh4IiwibmJmIjoxNzk1NTAwMDAwLCJpYXQiOjE3OTU1MDAwMDAsImV4cCI6MTc5NTUwMDYwMCwidmlkZW8iOnsiaW5ncmVzc0FkbWluIjp0cnVlfX0";
        let token = AccessClaims::ingress_admin("APIxxxx", 1_795_500_000, Duration::from_secs(600))
            .sign("whipgate-fixture-secret-0123456789abcdef")
            .unwrap();
        assert_eq!(token.split('.').nth(1), Some(fixture_payload));
    }

    #[test]
    fn room_templates() {
        let t = NameTemplate::parse("{tenant}-{stream}").unwrap();
        assert_eq!(t.captures(), ["tenant"]);
        assert_eq!(
            t.expand("cam", &[("tenant".into(), "acme".into())])
                .unwrap(),
            "acme-cam"
        );
        assert!(t.expand("cam", &[]).is_err());
        // What is substituted in is not read again.
        let t = NameTemplate::parse("{stream}").unwrap();
        assert_eq!(
            t.expand("a{tenant}", &[("tenant".into(), "x".into())])
                .unwrap(),
            "a{tenant}"
        );
        assert_eq!(t.expand("a{b", &[]).unwrap(), "a{b");
        assert!(NameTemplate::parse("{open").is_err());
        assert!(NameTemplate::parse("{}").is_err());
        assert!(NameTemplate::parse("").is_err());
    }
}
