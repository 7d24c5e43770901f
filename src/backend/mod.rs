//! Backends: what routes.toml says about each one, and the adapter that talks to it.
//!
//! Every backend kind implements the same three calls (create, patch, delete) so the front
//! door never knows which vendor is behind a stream: `whip` (a standard WHIP/WHEP server)
//! and `builtin` (the SFU in this process).

mod builtin;
mod client;
mod health;
mod template;
mod whip;

use std::fmt;
use std::sync::Arc;

pub use client::{ClientSettings, UpstreamClient, UpstreamError, UpstreamResponse};
pub use health::{CircuitPolicy, HealthBoard, Unavailable};
pub use template::{TemplateError, UrlTemplate};
pub use whip::{Created, Patched};

use crate::error::GatewayError;
use crate::kind::EndpointKind;
use crate::routing::BackendId;

/// A secret value (bearer token, key). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How whipgate authenticates to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAuth {
    None,
    /// `Authorization: Bearer <secret>`; the client's own credential is never forwarded.
    Bearer(Secret),
    /// Forward the client's `Authorization` header as it came.
    Passthrough,
}

/// One `[[backend]]`, validated.
#[derive(Debug, Clone)]
pub struct BackendDef {
    pub id: BackendId,
    pub adapter: Adapter,
    pub whip_url: Option<UrlTemplate>,
    pub whep_url: Option<UrlTemplate>,
    pub auth: BackendAuth,
    /// Fills `{key}` in the URL templates (a vendor's stream key).
    pub url_key: Option<Secret>,
    /// Hosts whipgate may follow a redirect to or accept in a Location: the templates' own
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
    pub fn endpoint(&self, kind: EndpointKind) -> Option<&UrlTemplate> {
        match kind {
            EndpointKind::Whip => self.whip_url.as_ref(),
            EndpointKind::Whep => self.whep_url.as_ref(),
        }
    }

    /// Whether this backend can take sessions of `kind` at all.
    pub fn serves(&self, kind: EndpointKind) -> bool {
        match self.adapter {
            Adapter::Whip => self.endpoint(kind).is_some(),
            Adapter::Builtin => true,
        }
    }

    pub fn allows_host(&self, url: &url::Url) -> bool {
        self.allowed_hosts.iter().any(|allowed| allowed.allows(url))
    }
}

/// A host a backend may send whipgate to; without a port, any port of that host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: Option<u16>,
}

impl AllowedHost {
    /// `host` or `host:port` (IPv6 in brackets).
    pub fn parse(value: &str) -> Option<Self> {
        let url = url::Url::parse(&format!("http://{value}/")).ok()?;
        if url.path() != "/" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.to_owned();
        let explicit_port = value
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let port = if explicit_port {
            url.port_or_known_default()
        } else {
            None
        };
        Some(Self { host, port })
    }

    pub fn allows(&self, url: &url::Url) -> bool {
        url.host_str() == Some(self.host.as_str())
            && self
                .port
                .is_none_or(|port| url.port_or_known_default() == Some(port))
    }
}

/// The backend kinds whipgate can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// A standard WHIP/WHEP server (RFC 9725, WHEP).
    Whip,
    /// The SFU inside this process.
    Builtin,
}

/// What adapters reach backends with: the pooled HTTP client, and the built-in SFU once it
/// runs (it starts with the first table that has a `builtin` backend).
#[derive(Clone)]
pub struct Upstreams {
    pub client: UpstreamClient,
    pub sfu: Arc<std::sync::OnceLock<crate::sfu::Sfu>>,
}

impl Upstreams {
    pub fn new(client: UpstreamClient) -> Self {
        Self {
            client,
            sfu: Arc::new(std::sync::OnceLock::new()),
        }
    }
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
    pub stream: &'a crate::routing::StreamName,
    /// Named captures of the route's stream regex, for URL templates.
    pub captures: &'a [(String, String)],
    pub offer: bytes::Bytes,
    pub client_authorization: Option<&'a http::HeaderValue>,
    pub request_id: &'a str,
}

/// Everything a PATCH or DELETE needs besides the backend.
pub struct SessionRequest<'a> {
    pub resource: &'a url::Url,
    pub client_authorization: Option<&'a http::HeaderValue>,
    pub request_id: &'a str,
}

impl Adapter {
    pub async fn create(
        &self,
        upstreams: &Upstreams,
        backend: &Arc<BackendDef>,
        request: CreateRequest<'_>,
    ) -> Result<Created, AttemptError> {
        match self {
            Adapter::Whip => whip::create(&upstreams.client, backend, request).await,
            Adapter::Builtin => builtin::create(upstreams.sfu.get(), backend, request).await,
        }
    }

    pub async fn patch(
        &self,
        upstreams: &Upstreams,
        backend: &Arc<BackendDef>,
        session: SessionRequest<'_>,
        body: bytes::Bytes,
        if_match: &crate::frontdoor::UpstreamIfMatch,
    ) -> Result<Patched, GatewayError> {
        match self {
            Adapter::Whip => whip::patch(&upstreams.client, backend, session, body, if_match).await,
            Adapter::Builtin => builtin::patch(upstreams.sfu.get(), session.resource, body).await,
        }
    }

    pub async fn delete(
        &self,
        upstreams: &Upstreams,
        backend: &Arc<BackendDef>,
        session: SessionRequest<'_>,
    ) -> Result<(), GatewayError> {
        match self {
            Adapter::Whip => whip::delete(&upstreams.client, backend, session).await,
            Adapter::Builtin => builtin::delete(upstreams.sfu.get(), session.resource).await,
        }
    }
}
