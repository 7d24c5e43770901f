//! Loading routes.toml: raw serde structs → a validated [`Config`] that cannot hold an
//! invalid table (unknown backend ids, empty candidate lists, bad globs or URL templates).
//! Every error names the file, the line and the problem on one line.

mod raw;
mod watch;

pub use watch::{watch, ConfigWatch};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use toml::Spanned;
use url::Url;

use crate::backend::{
    Adapter, AllowedHost, BackendAuth, BackendDef, CircuitPolicy, HealthCheck, Secret, UrlTemplate,
};
use crate::kind::EndpointKind;
use crate::routing::{BackendId, Matcher, Placement, Route, RouteTable, StreamPattern};
use crate::server::tls::TlsFiles;
use raw::{RawAuth, RawBackend, RawBackendKind, RawConfig, RawRoute, RawServer};

/// A validated routes.toml.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub backends: HashMap<BackendId, Arc<BackendDef>>,
    pub routes: RouteTable,
    /// The built-in SFU's settings, when a backend uses it.
    pub builtin: Option<crate::sfu::SfuSettings>,
    /// `[client_auth.NAME]`, built.
    pub client_auth: BTreeMap<String, Arc<crate::auth::ClientAuth>>,
    /// `[ice_server.NAME]`.
    pub ice_servers: BTreeMap<String, IceServerDef>,
}

pub use raw::IcePolicy;

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
    /// `(id, secret)`; empty means "generate an ephemeral key at start".
    pub session_keys: Vec<(String, Secret)>,
    pub session_ttl: Duration,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub header_read_timeout: Duration,
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
    /// Serve `/`, `/publish/{stream}` and `/play/{stream}`.
    pub pages: bool,
    pub max_sessions_per_subject: Option<usize>,
    /// `None`: no per-address limit.
    pub rate_limit: Option<RateLimitSettings>,
    /// The main listener's certificate and key: TLS only when present.
    pub tls: Option<TlsFiles>,
    /// Extra trust roots for HTTPS backends (from `upstream_ca_file`).
    pub upstream_roots: Vec<CertificateDer<'static>>,
    /// Proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Bearer token of the admin endpoints; `None` disables them.
    pub admin_token: Option<Secret>,
    pub sdp_validation: crate::sdp::Validation,
}

/// A problem in routes.toml, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Where secrets come from; tests substitute their own.
pub trait SecretSource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
}

/// The process environment and the file system.
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Whether to resolve secrets while loading (`serve`) or only check the file's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMode {
    Resolve,
    Skip,
}

impl Config {
    /// Reads and validates a routes.toml file.
    pub fn load(path: &Path, mode: SecretMode) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &name, &base, mode, &SystemSecrets)
    }

    /// Validates routes.toml text; `base` resolves relative secret file paths.
    pub fn from_toml(
        text: &str,
        file: &str,
        base: &Path,
        mode: SecretMode,
        secrets: &dyn SecretSource,
    ) -> Result<Self, ConfigError> {
        let loader = Loader {
            text,
            file,
            base,
            mode,
            secrets,
        };
        loader.load()
    }

    /// One line for `whipgate check` and the startup log.
    pub fn summary(&self) -> String {
        let mut ids: Vec<&str> = self.backends.keys().map(|id| id.0.as_str()).collect();
        ids.sort_unstable();
        format!(
            "{} backend{} ({}), {} route{}, listen {}{}",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", "),
            self.routes.routes().len(),
            if self.routes.routes().len() == 1 {
                ""
            } else {
                "s"
            },
            self.server.listen,
            if self.server.tls.is_some() {
                " (TLS)"
            } else {
                ""
            }
        )
    }
}

struct Loader<'a> {
    text: &'a str,
    file: &'a str,
    base: &'a Path,
    mode: SecretMode,
    secrets: &'a dyn SecretSource,
}

impl Loader<'_> {
    fn load(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            self.error_at(offset, e.message().trim().to_owned())
        })?;
        let server = self.server(raw.server)?;
        let builtin_settings = self.builtin(raw.builtin.as_ref())?;
        let mut client_auth = BTreeMap::new();
        for (name, auth) in &raw.client_auth {
            client_auth.insert(name.clone(), Arc::new(self.client_auth(name, auth)?));
        }
        let mut ice_servers = BTreeMap::new();
        for (name, server) in &raw.ice_server {
            ice_servers.insert(name.clone(), self.ice_server(name, server)?);
        }
        let mut backends = HashMap::new();
        let mut order = BTreeMap::new();
        for (index, backend) in raw.backend.into_iter().enumerate() {
            let span = backend.id.span();
            let def = self.backend(backend)?;
            if backends.contains_key(&def.id) {
                return Err(
                    self.error_at(span.start, format!("backend id `{}` appears twice", def.id))
                );
            }
            order.insert(index, def.id.clone());
            backends.insert(def.id.clone(), Arc::new(def));
        }
        let mut routes: Vec<Route> = Vec::new();
        for (index, route) in raw.route.into_iter().enumerate() {
            let at = route
                .backends
                .as_ref()
                .map(|b| b.span().start)
                .or_else(|| route.split.as_ref().map(|s| s.span().start))
                .unwrap_or(0);
            let route = self.route(index, route, &backends, &client_auth, &ice_servers)?;
            if routes.iter().any(|r| r.id == route.id) {
                return Err(self.error_at(at, format!("route id `{}` appears twice", route.id)));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(self.error_at(
                self.text.len(),
                "no [[route]]: nothing would be served".into(),
            ));
        }
        let builtin = backends
            .values()
            .any(|b| b.adapter == Adapter::Builtin)
            .then_some(builtin_settings);
        Ok(Config {
            server,
            backends,
            routes: RouteTable::new(routes),
            builtin,
            client_auth,
            ice_servers,
        })
    }

    fn ice_server(
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

    fn client_auth(
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

    fn builtin(
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

    fn server(&self, raw: RawServer) -> Result<ServerSettings, ConfigError> {
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
            Some(value) => Some(self.public_url(&value)?),
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
            session_keys,
            session_ttl: raw
                .session_ttl
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            max_body_bytes,
            request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(20)),
            upstream_timeout: raw.upstream_timeout.unwrap_or(Duration::from_secs(8)),
            connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(3)),
            header_read_timeout: raw.header_read_timeout.unwrap_or(Duration::from_secs(10)),
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
            pages: raw.pages.unwrap_or(false),
            max_sessions_per_subject: raw.max_sessions_per_subject,
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
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .map(|net| {
                    parse_cidr(net).map_err(|e| self.error_at(0, format!("trusted_proxies: {e}")))
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
        crate::server::tls::parse(&files, cert_pem.as_bytes(), key_pem.as_bytes()).map_err(
            |e| {
                let (value, name) = if e.path() == files.key {
                    (key, "tls_key_file")
                } else {
                    (cert, "tls_cert_file")
                };
                self.error_at(value.span().start, format!("{name}: {e}"))
            },
        )?;
        Ok(Some(files))
    }

    fn roots(&self, path: &Spanned<String>) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
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

    fn public_url(&self, value: &Spanned<String>) -> Result<Url, ConfigError> {
        let at = value.span().start;
        let url = Url::parse(value.get_ref())
            .map_err(|e| self.error_at(at, format!("public_url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(self.error_at(at, "public_url must be an http(s) origin".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.error_at(at, "public_url may not have a query or fragment".into()));
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
    fn secret(
        &self,
        at: usize,
        what: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Result<Secret, ConfigError> {
        let placeholder = || Secret::new("x".repeat(crate::session::MIN_SECRET_LEN));
        match (env, file) {
            (Some(name), None) => match self.mode {
                SecretMode::Skip => Ok(placeholder()),
                SecretMode::Resolve => self
                    .secrets
                    .env(name)
                    .map(|v| Secret::new(v.trim().to_owned()))
                    .filter(|s| !s.expose().is_empty())
                    .ok_or_else(|| {
                        self.error_at(
                            at,
                            format!("{what}: environment variable {name} is not set"),
                        )
                    }),
            },
            (None, Some(path)) => match self.mode {
                SecretMode::Skip => Ok(placeholder()),
                SecretMode::Resolve => {
                    let full: PathBuf = self.base.join(path);
                    let value = self.secrets.file(&full).map_err(|e| {
                        self.error_at(at, format!("{what}: cannot read {}: {e}", full.display()))
                    })?;
                    let value = value.trim().to_owned();
                    if value.is_empty() {
                        return Err(
                            self.error_at(at, format!("{what}: {} is empty", full.display()))
                        );
                    }
                    Ok(Secret::new(value))
                }
            },
            _ => Err(self.error_at(at, format!("{what}: give exactly one of *_env or *_file"))),
        }
    }

    fn backend(&self, raw: RawBackend) -> Result<BackendDef, ConfigError> {
        let id_at = raw.id.span().start;
        let id = raw.id.into_inner();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.error_at(
                id_at,
                format!("backend id `{id}` must be A-Z a-z 0-9 - _ ."),
            ));
        }
        let adapter = match raw.kind {
            RawBackendKind::Whip => Adapter::Whip,
            RawBackendKind::Builtin => Adapter::Builtin,
        };
        if adapter == Adapter::Builtin {
            let remote_only = [
                ("whip_url", raw.whip_url.is_some()),
                ("whep_url", raw.whep_url.is_some()),
                ("auth", raw.auth.is_some()),
                (
                    "url_key",
                    raw.url_key_env.is_some() || raw.url_key_file.is_some(),
                ),
                ("allowed_hosts", !raw.allowed_hosts.is_empty()),
                ("health_check", raw.health_check.is_some()),
            ];
            if let Some((key, _)) = remote_only.iter().find(|(_, set)| *set) {
                return Err(self.error_at(
                    id_at,
                    format!("backend `{id}`: {key} has no meaning for kind = \"builtin\""),
                ));
            }
        }
        let template = |value: &Option<Spanned<String>>,
                        key: &str|
         -> Result<Option<UrlTemplate>, ConfigError> {
            value
                .as_ref()
                .map(|v| {
                    UrlTemplate::parse(v.get_ref()).map_err(|e| {
                        self.error_at(v.span().start, format!("backend `{id}`: {key} {e}"))
                    })
                })
                .transpose()
        };
        let whip_url = template(&raw.whip_url, "whip_url")?;
        let whep_url = template(&raw.whep_url, "whep_url")?;
        if adapter == Adapter::Whip && whip_url.is_none() && whep_url.is_none() {
            return Err(self.error_at(
                id_at,
                format!("backend `{id}` needs whip_url, whep_url or both"),
            ));
        }
        let auth = match &raw.auth {
            None => BackendAuth::None,
            Some(auth) => self.auth(&id, auth)?,
        };
        let url_key = match (&raw.url_key_env, &raw.url_key_file) {
            (None, None) => None,
            (env, file) => Some(self.secret(
                id_at,
                &format!("backend `{id}` url_key"),
                env.as_deref(),
                file.as_deref(),
            )?),
        };
        let needs_key = whip_url
            .iter()
            .chain(whep_url.iter())
            .any(UrlTemplate::needs_key);
        if needs_key != url_key.is_some() {
            return Err(self.error_at(
                id_at,
                format!(
                    "backend `{id}`: {{key}} in a URL template and url_key_env / url_key_file go together"
                ),
            ));
        }
        let mut allowed_hosts: Vec<AllowedHost> = whip_url
            .iter()
            .chain(whep_url.iter())
            .map(UrlTemplate::allowed_host)
            .collect();
        for host in &raw.allowed_hosts {
            allowed_hosts.push(self.allowed_host(&id, host)?);
        }
        let sdp = self.policy(&format!("backend `{id}`"), raw.sdp)?;
        let circuit = raw
            .circuit
            .as_ref()
            .map_or_else(CircuitPolicy::default, |c| CircuitPolicy {
                failures: c.failures.unwrap_or(3).max(1),
                cooldown: c.cooldown.unwrap_or(Duration::from_secs(10)),
            });
        let health_check = match &raw.health_check {
            None => None,
            Some(check) => {
                let at = check.span().start;
                let raw_check = check.get_ref();
                let url = Url::parse(&raw_check.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        self.error_at(
                            at,
                            format!("backend `{id}`: health_check url is not an http(s) URL"),
                        )
                    })?;
                Some(HealthCheck {
                    url,
                    interval: raw_check
                        .interval
                        .unwrap_or(Duration::from_secs(5))
                        .max(Duration::from_millis(100)),
                    timeout: raw_check.timeout.unwrap_or(Duration::from_secs(2)),
                    rise: raw_check.rise.unwrap_or(2).max(1),
                    fall: raw_check.fall.unwrap_or(3).max(1),
                })
            }
        };
        let cost_per_minute = match raw.cost_per_minute {
            Some(cost) if !(cost.is_finite() && cost >= 0.0) => {
                return Err(self.error_at(
                    id_at,
                    format!("backend `{id}`: cost_per_minute must be 0 or more"),
                ))
            }
            cost => cost.unwrap_or(0.0),
        };
        if raw.max_sessions == Some(0) {
            return Err(self.error_at(
                id_at,
                format!("backend `{id}`: max_sessions = 0 would refuse everything"),
            ));
        }
        Ok(BackendDef {
            id: BackendId(id),
            sdp,
            max_sessions: raw.max_sessions,
            cost_per_minute,
            circuit,
            health_check,
            adapter,
            whip_url,
            whep_url,
            auth,
            url_key,
            allowed_hosts,
            trickle: raw.trickle.unwrap_or(true),
        })
    }

    fn auth(&self, id: &str, auth: &Spanned<RawAuth>) -> Result<BackendAuth, ConfigError> {
        let at = auth.span().start;
        let raw = auth.get_ref();
        let what = format!("backend `{id}` auth");
        match (raw.passthrough, &raw.bearer_env, &raw.bearer_file) {
            (Some(true), None, None) => Ok(BackendAuth::Passthrough),
            (None | Some(false), env, file) if env.is_some() || file.is_some() => self
                .secret(at, &what, env.as_deref(), file.as_deref())
                .map(BackendAuth::Bearer),
            (Some(false), None, None) => Ok(BackendAuth::None),
            _ => Err(self.error_at(
                at,
                format!("{what}: give one of bearer_env, bearer_file or passthrough = true"),
            )),
        }
    }

    fn allowed_host(&self, id: &str, host: &Spanned<String>) -> Result<AllowedHost, ConfigError> {
        AllowedHost::parse(host.get_ref()).ok_or_else(|| {
            self.error_at(
                host.span().start,
                format!(
                    "backend `{id}`: allowed_hosts entry `{}` is not host or host:port",
                    host.get_ref()
                ),
            )
        })
    }

    fn route(
        &self,
        index: usize,
        raw: RawRoute,
        backends: &HashMap<BackendId, Arc<BackendDef>>,
        client_auth: &BTreeMap<String, Arc<crate::auth::ClientAuth>>,
        ice_servers: &BTreeMap<String, IceServerDef>,
    ) -> Result<Route, ConfigError> {
        let id = raw.id.unwrap_or_else(|| format!("route-{}", index + 1));
        let auth = match &raw.auth {
            Some(name) if !client_auth.contains_key(name.get_ref()) => {
                return Err(self.error_at(
                    name.span().start,
                    format!(
                        "route `{id}` names unknown client_auth `{}`",
                        name.get_ref()
                    ),
                ))
            }
            Some(name) => Some(name.get_ref().clone()),
            None => None,
        };
        let bind_sessions = raw.bind_sessions.unwrap_or(false);
        let mut ice = Vec::new();
        for name in &raw.ice_servers {
            if !ice_servers.contains_key(name.get_ref()) {
                return Err(self.error_at(
                    name.span().start,
                    format!("route `{id}` names unknown ice_server `{}`", name.get_ref()),
                ));
            }
            ice.push(name.get_ref().clone());
        }
        let ice_policy = raw.ice_policy.unwrap_or(if ice.is_empty() {
            IcePolicy::Backend
        } else {
            IcePolicy::Merge
        });
        let list_at = raw.backends.as_ref().map(|b| b.span().start);
        let split_at = raw.split.as_ref().map(|b| b.span().start);
        let match_at = raw
            .matcher
            .as_ref()
            .map(|m| m.span().start)
            .or(list_at)
            .or(split_at)
            .unwrap_or(0);
        let raw_match = raw.matcher.map(Spanned::into_inner).unwrap_or_default();
        let mut matcher = self.matcher(&id, match_at, raw_match)?;
        if (matcher.tier.is_some() || !matcher.claims.is_empty() || bind_sessions)
            && client_auth.is_empty()
        {
            return Err(self.error_at(
                match_at,
                format!("route `{id}`: tier, claims and bind_sessions need a [client_auth.NAME]"),
            ));
        }
        matcher.identity_from = auth.clone();
        let known = |name: &Spanned<String>| -> Result<BackendId, ConfigError> {
            let backend_id = BackendId(name.get_ref().clone());
            if backends.contains_key(&backend_id) {
                Ok(backend_id)
            } else {
                Err(self.error_at(
                    name.span().start,
                    format!("route `{id}` names unknown backend `{backend_id}`"),
                ))
            }
        };
        let placement = match (raw.backends, raw.split) {
            (Some(list), None) => {
                let at = list.span().start;
                let ids = list
                    .into_inner()
                    .iter()
                    .map(known)
                    .collect::<Result<Vec<_>, _>>()?;
                if ids.is_empty() {
                    return Err(self.error_at(at, format!("route `{id}` lists no backends")));
                }
                Placement::Ordered(ids)
            }
            (None, Some(split)) => {
                let at = split.span().start;
                let mut weighted = Vec::new();
                for entry in split.into_inner() {
                    let name = Spanned::new(entry.span(), entry.get_ref().backend.clone());
                    weighted.push((known(&name)?, entry.get_ref().weight));
                }
                if weighted.iter().all(|(_, weight)| *weight == 0) {
                    return Err(
                        self.error_at(at, format!("route `{id}` split has no weight above 0"))
                    );
                }
                Placement::Weighted(weighted)
            }
            _ => {
                return Err(self.error_at(
                    match_at,
                    format!(
                        "route `{id}` needs exactly one of backends (ordered) or split (weighted)"
                    ),
                ))
            }
        };
        let overflow = raw
            .overflow
            .iter()
            .map(known)
            .collect::<Result<Vec<_>, _>>()?;
        let sdp = self.policy(&format!("route `{id}`"), raw.sdp)?;
        let route = Route {
            id,
            matcher,
            placement,
            overflow,
            sdp,
            auth,
            bind_sessions,
            ice_servers: ice,
            ice_policy,
        };
        self.check_route_backends(&route, match_at, backends)?;
        Ok(route)
    }

    fn matcher(&self, id: &str, at: usize, raw: raw::RawMatch) -> Result<Matcher, ConfigError> {
        let stream = match (&raw.stream, &raw.stream_regex) {
            (Some(_), Some(_)) => {
                return Err(self.error_at(
                    at,
                    format!("route `{id}`: give stream or stream_regex, not both"),
                ))
            }
            (Some(glob), None) => Some(StreamPattern::glob(glob.get_ref()).map_err(|e| {
                self.error_at(
                    glob.span().start,
                    format!("route `{id}`: bad stream glob: {e}"),
                )
            })?),
            (None, Some(regex)) => Some(StreamPattern::regex(regex.get_ref()).map_err(|e| {
                self.error_at(
                    regex.span().start,
                    format!("route `{id}`: bad stream_regex: {e}"),
                )
            })?),
            (None, None) => None,
        };
        let hosts = raw
            .host
            .map(raw::OneOrMany::into_vec)
            .unwrap_or_default()
            .iter()
            .map(|host| {
                globset::Glob::new(&host.to_ascii_lowercase())
                    .map(|g| g.compile_matcher())
                    .map_err(|e| {
                        self.error_at(at, format!("route `{id}`: bad host glob: {}", e.kind()))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = raw
            .headers
            .into_iter()
            .map(|(name, value)| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map(|n| (n.as_str().to_owned(), value))
                    .map_err(|_| {
                        self.error_at(at, format!("route `{id}`: bad header name {name:?}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_cidrs = raw
            .client_cidr
            .iter()
            .map(|net| {
                parse_cidr(net)
                    .map_err(|e| self.error_at(at, format!("route `{id}`: client_cidr {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Matcher {
            kind: raw.kind,
            stream,
            hosts,
            headers,
            query: raw.query.into_iter().collect(),
            client_cidrs,
            identity_from: None,
            tier: raw.tier,
            claims: raw.claims.into_iter().collect(),
        })
    }

    /// Every kind the route can match must have a backend serving it, and every template
    /// placeholder must be a capture of the route's regex.
    fn check_route_backends(
        &self,
        route: &Route,
        at: usize,
        backends: &HashMap<BackendId, Arc<BackendDef>>,
    ) -> Result<(), ConfigError> {
        let id = &route.id;
        let kinds: &[EndpointKind] = match route.matcher.kind {
            Some(EndpointKind::Whip) => &[EndpointKind::Whip],
            Some(EndpointKind::Whep) => &[EndpointKind::Whep],
            None => &[EndpointKind::Whip, EndpointKind::Whep],
        };
        let defs: Vec<&Arc<BackendDef>> = route
            .all_backends()
            .filter_map(|b| backends.get(b))
            .collect();
        if let Some(kind) = route.matcher.kind {
            if !defs.iter().any(|b| b.endpoint(kind).is_some()) {
                return Err(self.error_at(
                    at,
                    format!(
                        "route `{id}` matches {kind} but none of its backends has a {kind}_url"
                    ),
                ));
            }
        }
        let captures = route
            .matcher
            .stream
            .as_ref()
            .map(StreamPattern::capture_names)
            .unwrap_or_default();
        for backend in defs {
            for kind in kinds {
                let Some(template) = backend.endpoint(*kind) else {
                    continue;
                };
                if let Some(missing) = template.capture_names().find(|n| !captures.contains(n)) {
                    return Err(self.error_at(
                        at,
                        format!(
                            "route `{id}` uses backend `{}` whose {kind}_url needs {{{missing}}}, which the route's stream_regex does not capture",
                            backend.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn policy(
        &self,
        owner: &str,
        raw: Option<Spanned<crate::sdp::Policy>>,
    ) -> Result<crate::sdp::Policy, ConfigError> {
        let Some(raw) = raw else {
            return Ok(crate::sdp::Policy::default());
        };
        let at = raw.span().start;
        let policy = raw.into_inner();
        policy
            .validate()
            .map_err(|e| self.error_at(at, format!("{owner} sdp: {e}")))?;
        Ok(policy)
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.lines().next().unwrap_or("").to_owned(),
        }
    }
}

fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR"))
}

#[cfg(test)]
mod tests;
