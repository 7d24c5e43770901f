//! `[server]`, `[builtin]`, `[ice_server.NAME]` and `[client_auth.NAME]`: the gateway's own
//! settings, each with a safe default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use toml::Spanned;
use url::Url;

use super::raw::{self, RawServer};
use super::tls::TlsFiles;
use super::{ConfigError, Loader};
use crate::secret::{Secret, SecretMode};

/// An `[ice_server.NAME]`, with its credentials resolved.
#[derive(Debug, Clone)]
pub struct IceServerDef {
    pub urls: Vec<String>,
    pub credential: IceCredential,
}

#[derive(Debug, Clone)]
pub enum IceCredential {
    None,
    Static {
        username: String,
        password: Secret,
    },
    /// TURN REST credentials (coturn `use-auth-secret`), minted per session.
    Minted {
        secret: Secret,
        lifetime: Duration,
    },
}

/// Per client address, for POST/PATCH/DELETE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSettings {
    pub per_second: f64,
    pub burst: u32,
}

/// `[server]` with defaults filled in.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Separate listener for /metrics, /healthz, /readyz.
    pub metrics_listen: Option<SocketAddr>,
    pub public_url: Option<Url>,
    /// This replica's origin as the other replicas reach it (built-in sessions' owner).
    pub internal_url: Option<Url>,
    /// `(id, secret)`; empty means "generate an ephemeral key at start".
    pub session_keys: Vec<(String, Secret)>,
    pub session_ttl: Duration,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub backend_idle_timeout: Duration,
    /// Per worker: all plain-HTTP backends together, and per host for HTTPS ones.
    pub backend_max_idle_connections: usize,
    pub header_read_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    pub body_read_timeout: Duration,
    pub max_redirects: usize,
    /// Requests in flight before new ones are shed (health and metrics exempt).
    pub max_concurrent_requests: usize,
    /// Threads serving the main listener; read at start only.
    pub workers: usize,
    pub retry_after: Duration,
    pub not_live_retry_after: Duration,
    pub cors_allow_origins: Vec<String>,
    pub shutdown_grace: Duration,
    /// How long after SIGTERM new connections are still served (readiness failing).
    pub shutdown_drain: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    pub connection_idle_timeout: Duration,
    /// Serve `/`, `/publish/{stream}` and `/play/{stream}`.
    pub pages: bool,
    pub max_sessions_per_subject: Option<usize>,
    /// Sessions this replica holds at most, all backends and clients together.
    pub max_live_sessions: usize,
    /// WHEP event streams this replica serves at once.
    pub max_event_streams: usize,
    /// `None`: no per-address limit.
    pub rate_limit: Option<RateLimitSettings>,
    /// The main listener's certificate and key: TLS only when present.
    pub tls: Option<TlsFiles>,
    /// Extra trust roots for HTTPS backends (from `upstream_ca_file`).
    pub upstream_roots: Vec<CertificateDer<'static>>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one header those proxies append to.
    pub forwarded_header: crate::routing::ForwardedHeader,
    /// Bearer token of the admin endpoints; `None` disables them.
    pub admin_token: Option<Secret>,
    pub sdp_validation: crate::sdp::Validation,
}

impl Loader<'_> {
    pub(super) fn ice_server(
        &self,
        name: &str,
        raw: &Spanned<raw::RawIceServer>,
    ) -> Result<IceServerDef, ConfigError> {
        let at = raw.span().start;
        let raw = raw.get_ref();
        let error = |message: String| self.error_at(at, format!("ice_server `{name}`: {message}"));
        if raw.urls.is_empty() {
            return Err(error("needs urls".into()));
        }
        for url in &raw.urls {
            let scheme = url.split(':').next().unwrap_or("");
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns")
                || url.contains(['<', '>', '"', ' ', ','])
            {
                return Err(error(format!(
                    "`{url}` is not a stun:, turn: or turns: URI"
                )));
            }
        }
        let static_password = raw.credential_env.is_some() || raw.credential_file.is_some();
        let minted = raw.turn_secret_env.is_some() || raw.turn_secret_file.is_some();
        let credential =
            match (&raw.username, static_password, minted) {
                (None, false, false) => IceCredential::None,
                (Some(username), true, false) => IceCredential::Static {
                    username: username.clone(),
                    password: self.secret(
                        at,
                        &format!("ice_server `{name}` credential"),
                        raw.credential_env.as_deref(),
                        raw.credential_file.as_deref(),
                    )?,
                },
                (None, false, true) => IceCredential::Minted {
                    secret: self.secret(
                        at,
                        &format!("ice_server `{name}` turn_secret"),
                        raw.turn_secret_env.as_deref(),
                        raw.turn_secret_file.as_deref(),
                    )?,
                    lifetime: raw
                        .lifetime
                        .unwrap_or(Duration::from_secs(3600))
                        .max(Duration::from_secs(60)),
                },
                _ => return Err(error(
                    "give username with credential_env/_file, or turn_secret_env/_file, or neither"
                        .into(),
                )),
            };
        Ok(IceServerDef {
            urls: raw.urls.clone(),
            credential,
        })
    }

    pub(super) fn client_auth(
        &self,
        name: &str,
        raw: &Spanned<crate::auth::RawClientAuth>,
    ) -> Result<crate::auth::ClientAuth, ConfigError> {
        let at = raw.span().start;
        let located = |e: String| self.error_at(at, format!("client_auth `{name}`: {e}"));
        match self.mode {
            SecretMode::Resolve => {
                crate::auth::ClientAuth::build(raw.get_ref(), self.base, self.secrets)
                    .map_err(located)
            }
            SecretMode::Skip => {
                raw.get_ref().check_shape().map_err(located)?;
                Ok(crate::auth::ClientAuth::none())
            }
        }
    }

    pub(super) fn builtin(
        &self,
        raw: Option<&Spanned<raw::RawBuiltin>>,
    ) -> Result<crate::sfu::SfuSettings, ConfigError> {
        let mut settings = crate::sfu::SfuSettings::default();
        let Some(raw) = raw else {
            return Ok(settings);
        };
        let at = raw.span().start;
        let raw = raw.get_ref();
        if let Some(udp) = &raw.udp_listen {
            settings.udp_listen = udp.parse().map_err(|_| {
                self.error_at(
                    at,
                    format!("[builtin] udp_listen `{udp}` is not an address like 0.0.0.0:8189"),
                )
            })?;
        }
        let ips = |values: &[String], key: &str| -> Result<Vec<std::net::IpAddr>, ConfigError> {
            values
                .iter()
                .map(|v| {
                    v.parse().map_err(|_| {
                        self.error_at(at, format!("[builtin] {key}: `{v}` is not an IP address"))
                    })
                })
                .collect()
        };
        settings.host_addresses = ips(&raw.host_addresses, "host_addresses")?;
        if let Some(idle) = raw.idle_timeout {
            settings.idle_timeout = idle.max(Duration::from_secs(5));
        }
        if let Some(batch) = raw.send_batch {
            if !(1..=64).contains(&batch) {
                return Err(self.error_at(at, "[builtin] send_batch must be 1 to 64".into()));
            }
            settings.send_batch = batch;
        }
        if let Some(threads) = raw.threads {
            if !(1..=crate::sfu::MAX_SHARDS).contains(&threads) {
                return Err(self.error_at(at, "[builtin] threads must be 1 to 64".into()));
            }
            settings.threads = threads;
        }
        if let Some(gso) = raw.gso {
            settings.gso = gso;
        }
        if let Some(timeout) = raw.relay_timeout {
            // Below the target's 3 s check interval a healthy leg would be taken as failed.
            settings.relay_timeout = timeout.max(Duration::from_secs(4));
        }
        settings.public_addresses = ips(&raw.public_addresses, "public_addresses")?;
        if settings.udp_listen.ip().is_unspecified() && settings.host_addresses.is_empty() {
            return Err(self.error_at(
                at,
                "[builtin] udp_listen is a wildcard address: list the addresses clients reach \
                 in host_addresses"
                    .into(),
            ));
        }
        Ok(settings)
    }

    pub(super) fn server(&self, raw: RawServer) -> Result<ServerSettings, ConfigError> {
        let listen = match raw.listen {
            Some(listen) => listen.get_ref().parse().map_err(|_| {
                self.error_at(
                    listen.span().start,
                    "listen is not an address like 0.0.0.0:8080".into(),
                )
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], 8080)),
        };
        let metrics_listen = match &raw.metrics_listen {
            Some(value) => Some(value.get_ref().parse().map_err(|_| {
                self.error_at(
                    value.span().start,
                    "metrics_listen is not an address like 0.0.0.0:9090".into(),
                )
            })?),
            None => None,
        };
        let public_url = match raw.public_url {
            Some(value) => Some(self.origin("public_url", &value)?),
            None => None,
        };
        let internal_url = match raw.internal_url {
            Some(value) => Some(self.origin("internal_url", &value)?),
            None => None,
        };
        let mut session_keys = Vec::new();
        for key in &raw.session_keys {
            session_keys.push(self.session_key(key)?);
        }
        let ids: Vec<&str> = session_keys.iter().map(|(id, _)| id.as_str()).collect();
        let keyring = crate::session::Keyring::new(
            session_keys
                .iter()
                .map(|(id, s)| (id.clone(), s.expose().as_bytes())),
        );
        if let (Err(e), false) = (keyring, ids.is_empty()) {
            let offset = raw.session_keys.first().map_or(0, |k| k.span().start);
            return Err(self.error_at(offset, e.to_string()));
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(64 * 1024);
        if max_body_bytes < 1024 {
            return Err(self.error_at(
                0,
                "max_body_bytes below 1024 would refuse every offer".into(),
            ));
        }
        Ok(ServerSettings {
            listen,
            metrics_listen,
            public_url,
            internal_url,
            session_keys,
            session_ttl: raw
                .session_ttl
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            max_body_bytes,
            request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(20)),
            upstream_timeout: raw.upstream_timeout.unwrap_or(Duration::from_secs(8)),
            connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(3)),
            backend_idle_timeout: raw.backend_idle_timeout.unwrap_or(Duration::from_secs(90)),
            backend_max_idle_connections: raw.backend_max_idle_connections.unwrap_or(128),
            header_read_timeout: raw.header_read_timeout.unwrap_or(Duration::from_secs(10)),
            max_header_bytes: raw.max_header_bytes.unwrap_or(16 * 1024).max(8192),
            body_read_timeout: raw.body_read_timeout.unwrap_or(Duration::from_secs(10)),
            max_redirects: raw.max_redirects.unwrap_or(3),
            max_concurrent_requests: raw.max_concurrent_requests.unwrap_or(1024).max(1),
            workers: match raw.workers {
                Some(0) => return Err(self.error_at(0, "workers must be at least 1".into())),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, usize::from),
            },
            retry_after: raw.retry_after.unwrap_or(Duration::from_secs(5)),
            not_live_retry_after: raw.not_live_retry_after.unwrap_or(Duration::from_secs(2)),
            cors_allow_origins: raw.cors_allow_origins.unwrap_or_else(|| vec!["*".into()]),
            shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(10)),
            shutdown_drain: raw.shutdown_drain.unwrap_or(Duration::from_secs(1)),
            connection_idle_timeout: raw
                .connection_idle_timeout
                .unwrap_or(Duration::from_secs(60))
                .max(Duration::from_secs(1)),
            pages: raw.pages.unwrap_or(false),
            max_sessions_per_subject: raw.max_sessions_per_subject,
            max_live_sessions: raw.max_live_sessions.unwrap_or(100_000).max(1),
            max_event_streams: raw.max_event_streams.unwrap_or(10_000),
            rate_limit: match &raw.rate_limit {
                // Off unless asked for: behind an L7 proxy not listed in trusted_proxies every
                // client shares the proxy's address, and a default limit would throttle all.
                None | Some(raw::RawRateLimit::Enabled(false)) => None,
                Some(raw::RawRateLimit::Enabled(true)) => Some(RateLimitSettings {
                    per_second: 20.0,
                    burst: 100,
                }),
                Some(raw::RawRateLimit::Limits(limits)) => {
                    if !(limits.per_second > 0.0 && limits.per_second.is_finite())
                        || limits.burst == 0
                    {
                        return Err(self.error_at(
                            0,
                            "rate_limit needs per_second > 0 and burst >= 1 (or rate_limit = false)"
                                .into(),
                        ));
                    }
                    Some(RateLimitSettings {
                        per_second: limits.per_second,
                        burst: limits.burst,
                    })
                }
            },
            tls: self.tls_files(raw.tls_cert_file.as_ref(), raw.tls_key_file.as_ref())?,
            upstream_roots: match &raw.upstream_ca_file {
                Some(path) => self.roots(path)?,
                None => Vec::new(),
            },
            sdp_validation: raw.sdp_validation.unwrap_or_default(),
            admin_token: match (&raw.admin_token_env, &raw.admin_token_file) {
                (None, None) => None,
                (env, file) => {
                    Some(self.secret(0, "admin token", env.as_deref(), file.as_deref())?)
                }
            },
            forwarded_header: raw.forwarded_header.unwrap_or_default(),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .map(|net| {
                    super::route::parse_cidr(net)
                        .map_err(|e| self.error_at(0, format!("trusted_proxies: {e}")))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Both files or neither; read and checked (the key matches the certificate) unless
    /// secrets are skipped.
    fn tls_files(
        &self,
        cert: Option<&Spanned<String>>,
        key: Option<&Spanned<String>>,
    ) -> Result<Option<TlsFiles>, ConfigError> {
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(one), None) | (None, Some(one)) => {
                return Err(self.error_at(
                    one.span().start,
                    "give both tls_cert_file and tls_key_file, or neither".into(),
                ))
            }
        };
        let files = TlsFiles {
            cert: self.base.join(cert.get_ref()),
            key: self.base.join(key.get_ref()),
        };
        if self.mode == SecretMode::Skip {
            return Ok(Some(files));
        }
        let read = |path: &Path, value: &Spanned<String>, name: &str| {
            self.secrets.file(path).map_err(|e| {
                self.error_at(
                    value.span().start,
                    format!("{name}: cannot read {}: {e}", path.display()),
                )
            })
        };
        let cert_pem = read(&files.cert, cert, "tls_cert_file")?;
        let key_pem = read(&files.key, key, "tls_key_file")?;
        super::tls::parse(&files, cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
            let (value, name) = if e.path() == files.key {
                (key, "tls_key_file")
            } else {
                (cert, "tls_cert_file")
            };
            self.error_at(value.span().start, format!("{name}: {e}"))
        })?;
        Ok(Some(files))
    }

    fn roots(&self, path: &Spanned<String>) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        if self.mode == SecretMode::Skip {
            // `check --skip-secrets` checks the file's shape only; the CA file is read at start.
            return Ok(Vec::new());
        }
        let at = path.span().start;
        let full = self.base.join(path.get_ref());
        let roots = CertificateDer::pem_file_iter(&full)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.error_at(at, format!("upstream_ca_file {}: {e}", full.display())))?;
        if roots.is_empty() {
            return Err(self.error_at(
                at,
                format!("upstream_ca_file {} holds no certificate", full.display()),
            ));
        }
        Ok(roots)
    }

    fn origin(&self, key: &str, value: &Spanned<String>) -> Result<Url, ConfigError> {
        let at = value.span().start;
        let url = Url::parse(value.get_ref())
            .map_err(|e| self.error_at(at, format!("{key} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(self.error_at(at, format!("{key} must be an http(s) origin")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.error_at(at, format!("{key} may not have a query or fragment")));
        }
        Ok(url)
    }

    fn session_key(
        &self,
        key: &Spanned<raw::RawSessionKey>,
    ) -> Result<(String, Secret), ConfigError> {
        let at = key.span().start;
        let raw = key.get_ref();
        let what = format!("session key `{}`", raw.id);
        let secret = self.secret(
            at,
            &what,
            raw.secret_env.as_deref(),
            raw.secret_file.as_deref(),
        )?;
        Ok((raw.id.clone(), secret))
    }

    /// Exactly one of env / file; resolved now unless only the shape is being checked.
    pub(super) fn secret(
        &self,
        at: usize,
        what: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, ConfigError> {
        self.secrets()
            .resolve(what, env, file)
            .map_err(|message| self.error_at(at, message))
    }
}
