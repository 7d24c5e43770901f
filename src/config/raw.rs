//! routes.toml as written: serde structs that refuse unknown keys, so a typo is an error with
//! its line rather than a silently ignored setting. Converted into validated types by
//! [`super::Config::from_toml`].

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::kind::EndpointKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    /// `[[backend]]`: read key by key (the kind decides which keys exist).
    #[serde(default)]
    pub backend: Vec<super::backend::RawBackend>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    /// `[builtin]`: the built-in SFU's network settings.
    pub builtin: Option<Spanned<RawBuiltin>>,
    /// `[ice_server.NAME]`: STUN/TURN servers whipgate hands to clients (routes name them).
    #[serde(default)]
    pub ice_server: std::collections::BTreeMap<String, Spanned<RawIceServer>>,
    /// `[client_auth.NAME]`: ways clients prove who they are; routes name one in `auth`.
    #[serde(default)]
    pub client_auth: std::collections::BTreeMap<String, Spanned<crate::auth::RawClientAuth>>,
}

/// `[builtin]`: where the built-in SFU's media goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    /// The one UDP socket all its sessions share (default `127.0.0.1:8189`).
    pub udp_listen: Option<String>,
    /// Addresses advertised as ICE candidates (default: the `udp_listen` address).
    #[serde(default)]
    pub host_addresses: Vec<String>,
    /// Public addresses (1:1 NAT) advertised as well.
    #[serde(default)]
    pub public_addresses: Vec<String>,
    /// A connected peer that sends nothing (no media, RTCP or STUN) for this long has ended
    /// (default 30 s).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// A relay leg silent this long has failed, and one not connected within twice this
    /// (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub relay_timeout: Option<Duration>,
    /// Datagrams per send syscall (sendmmsg), 1 to 64 (default 64).
    pub send_batch: Option<usize>,
    /// Engine threads, 1 to 64 (default: one per core).
    pub threads: Option<usize>,
    /// Send a frame's packets to one peer as one UDP GSO message (default true).
    pub gso: Option<bool>,
}

/// `[server]`: every limit has a safe default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on (default `0.0.0.0:8080`).
    pub listen: Option<Spanned<String>>,
    /// A separate listener for /metrics, /healthz and /readyz (default: the main one).
    pub metrics_listen: Option<Spanned<String>>,
    /// Public origin for absolute `Location` URLs, e.g. `https://gw.example.com`.
    pub public_url: Option<Spanned<String>>,
    /// This replica's own address as the other replicas reach it: built-in sessions name
    /// it, so that any replica carries their PATCH and DELETE here.
    pub internal_url: Option<Spanned<String>>,
    /// Keys sealing session tokens; the first seals, all open.
    #[serde(default)]
    pub session_keys: Vec<Spanned<RawSessionKey>>,
    /// Lifetime of a session token (default 7 days).
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// Largest request body accepted (default 64 KiB).
    pub max_body_bytes: Option<usize>,
    /// Bound on a whole client request, failovers included (default 20 s).
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// Bound on one exchange with one backend, redirects included (default 8 s).
    #[serde(default, with = "humantime_serde")]
    pub upstream_timeout: Option<Duration>,
    /// Bound on opening a TCP connection to a backend (default 3 s).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How long a keep-alive connection to a backend stays open unused (default 90 s).
    #[serde(default, with = "humantime_serde")]
    pub backend_idle_timeout: Option<Duration>,
    /// Idle keep-alive connections to backends one worker keeps (default 128; 0 closes each
    /// connection after its answer).
    pub backend_max_idle_connections: Option<usize>,
    /// Largest request head (request line and headers) accepted, in bytes (default 16 KiB,
    /// at least 8 KiB); larger heads are refused.
    pub max_header_bytes: Option<usize>,
    /// Bound on a client sending its request headers (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Bound on a client sending its request body (default 10 s; 408 after).
    #[serde(default, with = "humantime_serde")]
    pub body_read_timeout: Option<Duration>,
    /// Requests served at once before new ones are shed with 503 (default 1024).
    pub max_concurrent_requests: Option<usize>,
    /// Threads serving the main listener, each with its own event loop and backend
    /// connection pool (default: one per CPU core).
    pub workers: Option<usize>,
    /// Upstream 307/308 hops followed (default 3).
    pub max_redirects: Option<usize>,
    /// `Retry-After` sent with 503 (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub retry_after: Option<Duration>,
    /// `Retry-After` sent with WHEP 409 when no publisher is live (default 2 s).
    #[serde(default, with = "humantime_serde")]
    pub not_live_retry_after: Option<Duration>,
    /// Origins allowed by CORS (default `["*"]`).
    pub cors_allow_origins: Option<Vec<String>>,
    /// PEM certificate chain of the main listener; with `tls_key_file`, it serves only TLS.
    pub tls_cert_file: Option<Spanned<String>>,
    /// PEM private key of `tls_cert_file` (both or neither).
    pub tls_key_file: Option<Spanned<String>>,
    /// PEM file of extra roots trusted for HTTPS backends, besides the system's.
    pub upstream_ca_file: Option<Spanned<String>>,
    /// `standard` (whipgate's own grammar check, default) or `strict` (webrtc-sdp as well).
    pub sdp_validation: Option<crate::sdp::Validation>,
    /// Bearer token of the admin endpoints, from the environment (absent: no admin API).
    pub admin_token_env: Option<String>,
    /// The same from a file.
    pub admin_token_file: Option<String>,
    /// Proxies whose X-Forwarded-For / Forwarded headers are believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header those proxies append the client's address to: `x-forwarded-for` (default)
    /// or `forwarded`; the other one is ignored.
    pub forwarded_header: Option<crate::routing::ForwardedHeader>,
    /// Serve the status, publish and play pages (`/`, `/publish/{stream}`, `/play/{stream}`);
    /// default false.
    pub pages: Option<bool>,
    /// Live sessions one authenticated subject may hold on this replica (default: no limit).
    pub max_sessions_per_subject: Option<usize>,
    pub max_live_sessions: Option<usize>,
    pub max_event_streams: Option<usize>,
    /// Per client address: POST/PATCH/DELETE per second and burst; `true` means 20/s, burst
    /// 100 (default: off).
    pub rate_limit: Option<RawRateLimit>,
    /// Bound on in-flight requests finishing at shutdown (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// How long new connections are still served after SIGTERM (default 1 s).
    #[serde(default, with = "humantime_serde")]
    pub shutdown_drain: Option<Duration>,
    /// Idle connections (HTTP/1.1 keep-alive, HTTP/2) are closed after this (default 60 s).
    #[serde(default, with = "humantime_serde")]
    pub connection_idle_timeout: Option<Duration>,
}

/// `[ice_server.NAME]`: a STUN or TURN server, with static or minted credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIceServer {
    /// `stun:`, `turn:` or `turns:` URIs of this server.
    pub urls: Vec<String>,
    /// Static long-term credential: the username, and the password from env or file.
    pub username: Option<String>,
    pub credential_env: Option<String>,
    pub credential_file: Option<String>,
    /// coturn `use-auth-secret`: per-session credentials minted with this shared secret.
    pub turn_secret_env: Option<String>,
    pub turn_secret_file: Option<String>,
    /// Lifetime of minted credentials (default 1 h).
    #[serde(default, with = "humantime_serde")]
    pub lifetime: Option<Duration>,
}

/// `rate_limit = { per_second = 20, burst = 100 }` or `rate_limit = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRateLimit {
    Enabled(bool),
    Limits(RawRateLimits),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub per_second: f64,
    pub burst: u32,
}

/// One `session_keys` entry: an id and where its secret lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionKey {
    pub id: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    /// Consecutive failures that open the circuit (default 3).
    pub failures: Option<u32>,
    /// How long it stays open before a trial request (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// The longest the backend is benched, by its circuit or by a `Retry-After` it sends
    /// (default 5 min).
    #[serde(default, with = "humantime_serde")]
    pub max_rest: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// URL probed with GET; any answer below 500 passes (default: the kind's own, where it
    /// has one).
    pub url: Option<String>,
    /// Default 5 s.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Default 2 s.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Passes in a row that bring the backend back (default 2).
    pub rise: Option<u32>,
    /// Failures in a row that take it out (default 3).
    pub fall: Option<u32>,
}

/// One `[[route]]`: `backends` (ordered) or `split` (weighted), optional `overflow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub id: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub backends: Option<Spanned<Vec<Spanned<String>>>>,
    pub split: Option<Spanned<Vec<Spanned<RawSplit>>>>,
    #[serde(default)]
    pub overflow: Vec<Spanned<String>>,
    /// SDP policy; fields it sets override the backend's default.
    pub sdp: Option<Spanned<crate::sdp::Policy>>,
    /// The `[client_auth.NAME]` clients of this route must pass (default: none).
    pub auth: Option<Spanned<String>>,
    /// PATCH/DELETE need the creating subject's credential too (default false).
    pub bind_sessions: Option<bool>,
    /// `[ice_server.NAME]`s given to this route's clients.
    #[serde(default)]
    pub ice_servers: Vec<Spanned<String>>,
    /// `backend` (pass the backend's), `replace` or `merge`; default `merge` with
    /// ice_servers, else `backend`.
    pub ice_policy: Option<crate::routing::IcePolicy>,
    /// Republish built-in publishers to other backends.
    pub relay: Option<Spanned<RawRelay>>,
}

/// `relay = { to = [...], mode = "failover" | "all", failback = "30s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    pub to: Vec<Spanned<String>>,
    pub mode: Option<crate::routing::relay::RelayMode>,
    #[serde(default, with = "humantime_serde")]
    pub failback: Option<Duration>,
}

/// One weighted backend of a `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub backend: String,
    pub weight: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub kind: Option<EndpointKind>,
    /// Glob on the stream name.
    pub stream: Option<Spanned<String>>,
    /// Regex on the whole stream name; named captures fill `{name}` in URL templates.
    pub stream_regex: Option<Spanned<String>>,
    /// Host globs (without port), any of which matches.
    pub host: Option<OneOrMany>,
    /// Header name → exact value, all of which must be present.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Query parameter → exact value, all of which must be present.
    #[serde(default)]
    pub query: std::collections::BTreeMap<String, String>,
    /// Client address in any of these CIDRs (see `[server] trusted_proxies`).
    #[serde(default)]
    pub client_cidr: Vec<String>,
    /// The client's tier, from the route's `auth` (bearer token `tier` or a JWT claim).
    pub tier: Option<String>,
    /// JWT claim → value (string equal, or array containing it), from the route's `auth`.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}
