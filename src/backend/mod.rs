//! Backends: what routes.toml says about each one, and the adapter that talks to it.
//!
//! Every backend kind is one module behind one interface, [`Adapter`]: create a session,
//! PATCH it, DELETE it, say what it serves, and hand back what the session must remember
//! (sealed in its token, so any replica serves its PATCH and DELETE). The front door never
//! knows which vendor is behind a stream. Adding a kind is its module and one line in
//! [`KINDS`].

mod broker;
mod builtin;
mod client;
mod cloudflare;
mod exchange;
mod h1pool;
mod health;
mod ivs;
mod janus;
mod keys;
mod livekit;
mod millicast;
mod openai;
pub mod origin;
mod pipecat;
mod template;
mod webhook;
mod whip;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use url::Url;

pub use client::{ClientSettings, UpstreamClient, UpstreamError, UpstreamResponse};
pub use exchange::{BACKEND_EVENTS, BACKEND_EVENT_NAMES};
pub use health::{CircuitPolicy, HealthBoard, Unavailable, DEFAULT_MAX_REST};
pub use keys::{KeyError, KindKeys};
pub use origin::BackendUrl;
pub use template::{TemplateError, UrlTemplate};

use crate::error::GatewayError;
use crate::frontdoor::{IceServer, UpstreamIfMatch};
use crate::kind::EndpointKind;
use crate::routing::{BackendId, StreamName};
pub use crate::secret::Secret;
use crate::session::{SessionClaims, SessionState};

/// Every backend kind routes.toml knows, by its `kind` name, and how it is built from the
/// kind's own keys.
const KINDS: &[Kind] = &[
    ("whip", whip::KEYS, whip::build),
    ("builtin", builtin::KEYS, builtin::build),
    ("livekit", livekit::KEYS, livekit::build),
    ("ivs", ivs::KEYS, ivs::build),
    ("cloudflare", cloudflare::KEYS, cloudflare::build),
    ("millicast", millicast::KEYS, millicast::build),
    ("webhook", webhook::KEYS, webhook::build),
    ("janus", janus::KEYS, janus::build),
    ("pipecat", pipecat::KEYS, pipecat::build),
    ("openai-realtime", openai::KEYS, openai::build),
];

/// A kind's name, its own keys, and its builder.
type Kind = (&'static str, &'static [&'static str], BuildAdapter);

/// The SFU peer a built-in session's resource names, if it is one.
pub fn builtin_peer(resource: &Url) -> Option<crate::sfu::PeerId> {
    builtin::peer_id(resource).ok()
}

/// The keys of `[[backend]]` that mean the same for every kind (read by the config loader).
pub const COMMON_KEYS: &[&str] = &[
    "id",
    "kind",
    "allowed_hosts",
    "trickle",
    "sdp",
    "max_sessions",
    "cost_per_minute",
    "circuit",
    "health_check",
    "drain",
];

type BuildAdapter = fn(&mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError>;

/// The `kind` names routes.toml accepts.
pub fn kind_names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|(name, _, _)| *name)
}

/// The keys `kind` takes besides [`COMMON_KEYS`] (for the README check), if it exists.
pub fn kind_keys(kind: &str) -> Option<&'static [&'static str]> {
    KINDS
        .iter()
        .find(|(name, _, _)| *name == kind)
        .map(|(_, keys, _)| *keys)
}

/// Builds the adapter of `kind` from its keys (those every kind shares already taken).
pub fn build_adapter(kind: &str, keys: &mut KindKeys<'_>) -> Result<Arc<dyn Adapter>, KeyError> {
    let Some((_, known, build)) = KINDS.iter().find(|(name, _, _)| *name == kind) else {
        let names: Vec<&str> = kind_names().collect();
        return Err(keys.error(format!(
            "unknown kind `{kind}` (one of {})",
            names.join(", ")
        )));
    };
    // A misspelt key is reported as such, not as the missing key it was meant to be.
    keys.refuse_unknown(known)?;
    build(keys)
}

/// A future an adapter returns; boxed so that adapters live behind `dyn Adapter`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One backend kind: the vendor's dialect on one side, the standard on the other.
pub trait Adapter: Send + Sync + fmt::Debug {
    /// Its routes.toml `kind`.
    fn kind(&self) -> &'static str;

    /// Whether it can take WHIP or WHEP sessions at all (LiveKit and IVS have no WHEP).
    fn serves(&self, endpoint: EndpointKind) -> bool;

    /// Whether trickle / ICE-restart PATCH is forwarded by default (`trickle` overrides).
    fn trickle(&self) -> bool {
        true
    }

    /// False for the SFU in this process: no hosts, credentials or health probes apply.
    fn is_remote(&self) -> bool {
        true
    }

    /// Hosts this backend may send whipgate to (redirects, Locations), from its own URLs.
    fn hosts(&self) -> Vec<AllowedHost>;

    /// Route regex captures its URL or name templates need for `endpoint`.
    fn placeholders(&self, _endpoint: EndpointKind) -> Vec<String> {
        Vec::new()
    }

    /// What a `health_check` without `url` probes: a URL of the vendor's that answers below
    /// 500 while it takes sessions.
    fn health_url(&self) -> Option<Url> {
        None
    }

    /// One line for `explain`: the kind and where it goes; never a secret.
    fn describe(&self) -> String;

    /// Whether [`Adapter::ended`] can tell anything (the gateway asks only those kinds).
    fn reports_ended(&self) -> bool {
        false
    }

    /// Of these sessions' resources, which have ended on the backend's side without a
    /// DELETE (the client vanished); `None` when the kind cannot tell, and then only a DELETE
    /// or the token's expiry ends them here.
    fn ended<'a>(
        &'a self,
        _cx: &'a Upstreams,
        _backend: &'a BackendDef,
        _resources: &'a [Url],
    ) -> BoxFuture<'a, Option<Vec<bool>>> {
        Box::pin(async { None })
    }

    /// Opens a session for a client's offer.
    fn create<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        request: CreateRequest<'a>,
    ) -> BoxFuture<'a, Result<Created, AttemptError>>;

    /// Where PATCH and DELETE of a session go, with which credential: by default its
    /// resource URL with none. The default `patch` and `delete` speak WHIP to it.
    fn session_target(&self, session: &SessionRequest<'_>) -> Result<SessionTarget, GatewayError> {
        Ok(SessionTarget::sealed(session.resource.clone(), None))
    }

    /// Trickle or ICE restart on a session it created.
    fn patch<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        body: Bytes,
        if_match: &'a UpstreamIfMatch,
    ) -> BoxFuture<'a, Result<Patched, GatewayError>> {
        Box::pin(async move {
            let target = self.session_target(&session)?;
            exchange::patch(
                cx,
                backend,
                &target.exchange(backend, session.request_id),
                body,
                if_match,
            )
            .await
        })
    }

    /// Whether a player's empty POST (legacy WHEP: the server offers) may go to it.
    fn makes_offers(&self) -> bool {
        false
    }

    /// A client's answer to the backend's offer (`PATCH application/sdp` on a session whose
    /// POST got a counter-offer); by default a WHEP PATCH of the resource.
    fn answer<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
        answer: Bytes,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let target = self.session_target(&session)?;
            exchange::answer(
                cx,
                backend,
                &target.exchange(backend, session.request_id),
                answer,
            )
            .await
        })
    }

    /// The backend a `builtin` backend pulls streams from for its viewers (`pull`).
    fn pulls_from(&self) -> Option<&str> {
        None
    }

    /// Whether its players may choose a simulcast layer (the WHEP layer extension).
    fn chooses_layers(&self) -> bool {
        false
    }

    /// A player's layer choice on its m-line `media_id` (`None`: back to the default).
    fn select_layer<'a>(
        &'a self,
        _cx: &'a Upstreams,
        _session: SessionRequest<'a>,
        _media_id: &'a str,
        _rid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async {
            Err(GatewayError::NotFound(
                "this session's backend offers no layer choice".into(),
            ))
        })
    }

    /// The layers a player may choose from, per its video m-line (mid, rids).
    fn layers<'a>(
        &'a self,
        _cx: &'a Upstreams,
        _resource: &'a Url,
    ) -> BoxFuture<'a, Vec<(String, Vec<String>)>> {
        Box::pin(async { Vec::new() })
    }

    /// Ends a session it created, with whatever cleanup the vendor needs.
    fn delete<'a>(
        &'a self,
        cx: &'a Upstreams,
        backend: &'a BackendDef,
        session: SessionRequest<'a>,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move { remote_delete(self, cx, backend, &session).await })
    }
}

/// The WHIP DELETE of a session at its [`Adapter::session_target`]: the default `delete`, and
/// the first step of kinds that clean up more.
async fn remote_delete<A: Adapter + ?Sized>(
    adapter: &A,
    cx: &Upstreams,
    backend: &BackendDef,
    session: &SessionRequest<'_>,
) -> Result<(), GatewayError> {
    let target = adapter.session_target(session)?;
    exchange::delete(cx, backend, &target.exchange(backend, session.request_id)).await
}

/// Where a session's PATCH and DELETE go.
#[derive(Debug, Clone)]
pub struct SessionTarget {
    pub url: BackendUrl,
    /// The credential for them (marked sensitive).
    pub authorization: Option<http::HeaderValue>,
    /// It is the client's own: a 401/403 is the client's fault.
    pub passthrough: bool,
    /// It is the backend's configured credential (not one sealed with the session): it goes
    /// only to the backend's hosts. A backend id re-pointed at another vendor by a reload
    /// must not send the new vendor's credential to the old vendor's session URLs.
    pub configured: bool,
}

impl SessionTarget {
    /// A session URL and a credential sealed with it (or none).
    pub fn sealed(url: impl Into<BackendUrl>, authorization: Option<http::HeaderValue>) -> Self {
        Self {
            url: url.into(),
            authorization,
            passthrough: false,
            configured: false,
        }
    }

    /// The session URL with the bearer the adapter sealed under `key` in the session state.
    pub fn sealed_bearer(session: &SessionRequest<'_>, key: &str) -> Self {
        Self::sealed(
            session.resource.clone(),
            session
                .claims
                .state
                .get(key)
                .and_then(|secret| exchange::bearer(secret)),
        )
    }

    fn exchange<'a>(mut self, backend: &BackendDef, request_id: &'a str) -> exchange::Target<'a> {
        if self.configured && self.authorization.is_some() && !backend.allows_host(&self.url) {
            tracing::warn!(
                backend = %backend.id,
                "a session's URL is not on the backend's hosts (its definition changed?): its credential is not sent"
            );
            self.authorization = None;
        }
        let mut target = exchange::Target::new(self.url, self.authorization, request_id);
        target.passthrough = self.passthrough;
        target
    }
}

/// One `[[backend]]`, validated: the settings every kind shares, and its adapter.
#[derive(Debug, Clone)]
pub struct BackendDef {
    pub id: BackendId,
    pub adapter: Arc<dyn Adapter>,
    /// Hosts whipgate may follow a redirect to or accept in a Location: the adapter's own
    /// hosts plus those configured.
    pub allowed_hosts: Vec<AllowedHost>,
    /// Whether the backend takes trickle / ICE-restart PATCH requests.
    pub trickle: bool,
    /// Default SDP policy for routes to this backend.
    pub sdp: crate::sdp::Policy,
    /// Sessions this replica sends here at most; beyond it, the route's next candidates.
    pub max_sessions: Option<usize>,
    /// Price of one session-minute, for the cost estimate metric.
    pub cost_per_minute: f64,
    pub circuit: CircuitPolicy,
    pub health_check: Option<HealthCheck>,
    /// `drain = true`: no new sessions; its publishers are ended so that they reconnect to
    /// the route's next choice, and its players are told to reconnect.
    pub drain: bool,
}

/// An active health probe: `GET url` every `interval`; any answer below 500 within
/// `timeout` is a pass. `fall` failures in a row take the backend out, `rise` passes bring
/// it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub url: url::Url,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub rise: u32,
    pub fall: u32,
}

impl BackendDef {
    /// Whether this backend can take sessions of `kind` at all.
    pub fn serves(&self, kind: EndpointKind) -> bool {
        self.adapter.serves(kind)
    }

    pub fn allows_host(&self, url: &impl HostAndPort) -> bool {
        self.allowed_hosts.iter().any(|allowed| allowed.allows(url))
    }

    /// Its routes.toml kind.
    pub fn kind(&self) -> &'static str {
        self.adapter.kind()
    }
}

/// A host a backend may send whipgate to; without a port, any port of that host. `*.domain`
/// allows every subdomain of `domain` (vendors that redirect to regional hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: Option<u16>,
    /// `*.` was given: `host` is a parent domain, matched on a label boundary.
    pub subdomains: bool,
}

impl AllowedHost {
    /// `host`, `host:port` (IPv6 in brackets) or `*.domain[:port]`.
    pub fn parse(value: &str) -> Option<Self> {
        let (subdomains, rest) = match value.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let url = url::Url::parse(&format!("http://{rest}/")).ok()?;
        if url.path() != "/" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.to_owned();
        if subdomains && !matches!(url.host(), Some(url::Host::Domain(_))) {
            return None;
        }
        let explicit_port = rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let port = if explicit_port {
            url.port_or_known_default()
        } else {
            None
        };
        Some(Self {
            host,
            port,
            subdomains,
        })
    }

    /// Exactly the host (and port, when given) of `url`.
    pub fn of(url: &Url) -> Option<Self> {
        Some(Self {
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default(),
            subdomains: false,
        })
    }

    pub fn allows(&self, url: &impl HostAndPort) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host_ok = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok
            && self
                .port
                .is_none_or(|port| url.port_or_known_default() == Some(port))
    }
}

/// What a host check reads of a URL.
pub trait HostAndPort {
    fn host_str(&self) -> Option<&str>;
    fn port_or_known_default(&self) -> Option<u16>;
}

impl HostAndPort for Url {
    fn host_str(&self) -> Option<&str> {
        Url::host_str(self)
    }

    fn port_or_known_default(&self) -> Option<u16> {
        Url::port_or_known_default(self)
    }
}

impl HostAndPort for BackendUrl {
    fn host_str(&self) -> Option<&str> {
        BackendUrl::host_str(self)
    }

    fn port_or_known_default(&self) -> Option<u16> {
        BackendUrl::port_or_known_default(self)
    }
}

/// What adapters reach backends with: the pooled HTTP client, the built-in SFU once it runs
/// (it starts with the first table that has a `builtin` backend), and what pulls streams
/// into it from other backends (set when the server starts).
#[derive(Clone)]
pub struct Upstreams {
    pub client: UpstreamClient,
    pub sfu: Arc<std::sync::OnceLock<crate::sfu::Sfu>>,
    pub puller: Arc<std::sync::OnceLock<Arc<dyn Puller>>>,
}

impl Upstreams {
    pub fn new(client: UpstreamClient) -> Self {
        Self {
            client,
            sfu: Arc::new(std::sync::OnceLock::new()),
            puller: Arc::new(std::sync::OnceLock::new()),
        }
    }
}

/// Brings a stream onto the built-in SFU from another backend (`pull = "origin"`): once per
/// stream however many viewers ask, returning when the stream is live on the SFU.
pub trait Puller: Send + Sync {
    fn pull<'a>(
        &'a self,
        origin: &'a str,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

/// A failed attempt at one backend, and whether the next candidate should be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub error: GatewayError,
    /// Refused, timed out, 5xx, 429: another backend may well succeed.
    pub retryable: bool,
}

impl AttemptError {
    pub fn fatal(error: GatewayError) -> Self {
        Self {
            error,
            retryable: false,
        }
    }

    pub fn retryable(error: GatewayError) -> Self {
        Self {
            error,
            retryable: true,
        }
    }
}

/// Everything a create call needs besides the backend.
pub struct CreateRequest<'a> {
    pub kind: EndpointKind,
    pub stream: &'a StreamName,
    /// Named captures of the route's stream regex, for URL templates.
    pub captures: &'a [(String, String)],
    pub offer: Bytes,
    pub client_authorization: Option<&'a http::HeaderValue>,
    pub request_id: &'a str,
    /// The id the session will have (a vendor may want a unique participant name).
    pub sid: &'a str,
    pub route: &'a str,
    /// Who the client authenticated as, and its tier, when a client_auth accepted it.
    pub subject: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub client_ip: Option<std::net::IpAddr>,
    /// Unix seconds, from the gateway's clock (token lifetimes, request signatures).
    pub now: u64,
}

/// Everything a PATCH or DELETE needs besides the backend.
pub struct SessionRequest<'a> {
    pub resource: &'a BackendUrl,
    /// What the session token holds: stream, route and the adapter's own state.
    pub claims: &'a SessionClaims,
    pub client_authorization: Option<&'a http::HeaderValue>,
    pub request_id: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub now: u64,
}

/// A backend session that now exists.
#[derive(Debug, Clone)]
pub struct Created {
    /// The backend's answer; or its own offer with `counter_offer`.
    pub answer: Bytes,
    /// The body is the backend's offer (a WHEP 406 counter-offer, or a legacy server offer
    /// to an empty POST): the client answers it with `PATCH application/sdp`.
    pub counter_offer: bool,
    /// Absolute, on a host the backend is allowed to use.
    pub resource: BackendUrl,
    pub etag: Option<String>,
    pub ice_servers: Vec<IceServer>,
    /// What PATCH and DELETE will need; sealed into the session token.
    pub state: SessionState,
}

/// A backend's reply to a PATCH.
#[derive(Debug, Clone)]
pub struct Patched {
    /// 204 for trickle, 200 with a fragment for an ICE restart.
    pub status: StatusCode,
    pub body: Option<Bytes>,
    pub etag: Option<String>,
}

impl Patched {
    pub fn trickled() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
            etag: None,
        }
    }
}
