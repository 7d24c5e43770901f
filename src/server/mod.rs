//! The HTTP front door: a hyper server whose one service is [`Gateway::handle`].
//!
//! The listener, graceful shutdown and tower layers live here; what each endpoint does lives
//! in `handlers`.

mod admin;
mod balance;
mod conn;
mod cors;
mod create;
mod events;
mod forward;
mod handlers;
mod ice;
mod identity;
mod pages;
mod probes;
mod pull;
mod relay;
mod response;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::backend::{BackendDef, ClientSettings, HealthBoard, UpstreamClient};
use crate::config::{Config, SecretMode};
use crate::routing::BackendId;
use crate::session::{Keyring, SessionRegistry};

pub use response::Body;

pub use crate::clock::Clock;

/// How a request reached whipgate (a request extension; one, since each is an allocation).
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The client's address as the listener saw it.
    pub peer: SocketAddr,
    pub listener: Listener,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Which listener a request came in on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// WHIP, WHEP, sessions, admin; also /metrics unless a metrics listener is configured.
    Main,
    /// `[server] metrics_listen`: /metrics, /healthz and /readyz only.
    Metrics,
}

/// The table in force and the keys built from it, swapped together on reload.
struct Live {
    config: Arc<Config>,
    keys: Arc<Keyring>,
    generation: u64,
}

/// The outcome of the last reload, for the admin endpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub last_error: Option<String>,
    /// Settings changed by a reload that wait for a restart (by routes.toml name).
    pub pending_restart: Vec<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

/// Everything a request needs: the live table and keys, the upstream client, this replica's
/// sessions and its view of backend health.
pub struct Gateway {
    live: ArcSwap<Live>,
    /// The table before the last reload: WHEP falls back to its placement.
    previous: ArcSwapOption<Config>,
    /// Backends that left the table, kept for the sessions still on them (a token lives
    /// at most `session_ttl`, so a definition retired that long ago can go).
    retired: Mutex<HashMap<BackendId, (Arc<BackendDef>, Instant)>>,
    config_path: Option<PathBuf>,
    ephemeral_secret: [u8; 32],
    status: Mutex<ReloadStatus>,
    upstreams: crate::backend::Upstreams,
    registry: SessionRegistry,
    health: Arc<HealthBoard>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Requests being served now, for load shedding.
    in_flight: std::sync::atomic::AtomicUsize,
    /// A separate metrics listener runs (bound at start): the main one then hides /metrics.
    /// Decided by what runs, not by the table, which a reload may change.
    metrics_listener: std::sync::atomic::AtomicBool,
    /// WHEP event streams open on this replica (`max_event_streams`).
    event_streams: std::sync::atomic::AtomicUsize,
    /// Backends drained by `POST /admin/drain` (besides `drain = true` in the table).
    drained: Mutex<std::collections::HashSet<String>>,
    /// Woken when sessions may have to move (a drain, a reload): event streams look at once.
    moved: tokio::sync::Notify,
    /// Held while publishers of drained backends are being ended.
    drain_running: tokio::sync::Mutex<()>,
    /// Publishers of a drained backend that only their client's credential could end.
    drain_given_up: Mutex<std::collections::HashSet<String>>,
    /// Event streams per session id (a few each, so one token cannot take them all).
    event_streams_per_session: Mutex<HashMap<String, usize>>,
    /// Set at shutdown: readiness fails while connections drain.
    draining: std::sync::atomic::AtomicBool,
    /// Per-address limits of POST/PATCH/DELETE, rebuilt when their settings change.
    rate_limits: Mutex<Option<RateLimiter>>,
    probes: probes::Probes,
    /// The main listener's certificate, when it serves TLS.
    tls: Option<Arc<tls::CertResolver>>,
    clock: Clock,
    /// Relayed streams of the built-in SFU, and where their supervisors are asked for.
    relays: relay::Relays,
    relay_starts: tokio::sync::mpsc::UnboundedSender<relay::RelayStart>,
    relay_inbox: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<relay::RelayStart>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("session keys: {0}")]
    Keys(#[from] crate::session::KeyError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS certificate: {0}")]
    Certificate(#[from] tls::CertError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("no randomness available")]
    Random,
    #[error(transparent)]
    Sfu(#[from] crate::sfu::StartError),
    #[error("cannot start a worker: {0}")]
    Thread(std::io::Error),
}

type RateLimiter = (
    crate::config::RateLimitSettings,
    Arc<crate::ratelimit::RateLimits>,
);

/// The settings read only when the process starts that differ between `old` and `new`, by
/// their routes.toml names, so that a reload says which of its changes wait for a restart.
fn restart_only_changes(old: &Config, new: &Config, sfu_running: bool) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut changed = Vec::new();
    let checks: [(&'static str, bool); 10] = [
        ("[server] listen", a.listen != b.listen),
        (
            "[server] metrics_listen",
            a.metrics_listen != b.metrics_listen,
        ),
        ("[server] workers", a.workers != b.workers),
        (
            "[server] header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "[server] max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        ),
        (
            "[server] shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        (
            "[server] shutdown_drain",
            a.shutdown_drain != b.shutdown_drain,
        ),
        (
            "[server] connection_idle_timeout",
            a.connection_idle_timeout != b.connection_idle_timeout,
        ),
        (
            "[server] tls_cert_file / tls_key_file (TLS on or off)",
            a.tls.is_some() != b.tls.is_some(),
        ),
        (
            "[builtin]",
            sfu_running
                && old.builtin.is_some()
                && new.builtin.is_some()
                && old.builtin != new.builtin,
        ),
    ];
    for (name, differs) in checks {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// Most `sessions_live` series shown at 0 before their first session; a table of thousands of
/// routes would otherwise put as many idle series in every scrape.
const MAX_ZERO_LIVE_SERIES: usize = 1000;

/// Creates the per-backend series dashboards plot (live, started and ended sessions,
/// session-seconds, cost) at 0, so that a backend shows from the start rather than from its first session.
fn zero_series(metrics: &crate::metrics::Metrics, config: &Config) {
    use crate::kind::EndpointKind;
    for id in config.backends.keys() {
        metrics.session_seconds.with_label_values(&[id.0.as_str()]);
        metrics.cost_estimate.with_label_values(&[id.0.as_str()]);
    }
    let mut created = 0;
    for route in config.routes.routes() {
        for id in route.all_backends() {
            let Some(backend) = config.backends.get(id) else {
                continue;
            };
            for kind in [EndpointKind::Whip, EndpointKind::Whep] {
                if route.matcher.kind.is_some_and(|k| k != kind) || !backend.serves(kind) {
                    continue;
                }
                if created == MAX_ZERO_LIVE_SERIES {
                    return;
                }
                let labels = [id.0.as_str(), route.id.as_str(), kind.as_str()];
                metrics.sessions_live.with_label_values(&labels);
                metrics.sessions_started.with_label_values(&labels);
                metrics.sessions_ended.with_label_values(&labels);
                created += 1;
            }
        }
    }
}

/// Starts the built-in SFU unless it runs already. Its socket cannot move while sessions
/// use it, so changed `[builtin]` settings wait for a restart.
fn start_sfu(
    upstreams: &crate::backend::Upstreams,
    settings: &crate::sfu::SfuSettings,
) -> Result<(), crate::sfu::StartError> {
    if upstreams.sfu.get().is_some() {
        return Ok(());
    }
    let sfu = crate::sfu::Sfu::start(settings)?;
    let _ = upstreams.sfu.set(sfu);
    Ok(())
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, StartError> {
        let random = SystemRandom::new();
        let mut ephemeral_secret = [0u8; 32];
        random
            .fill(&mut ephemeral_secret)
            .map_err(|_| StartError::Random)?;
        if config.server.session_keys.is_empty() {
            tracing::warn!(
                "no session_keys configured: using an ephemeral key; sessions will not survive \
                 a restart or be served by another replica"
            );
        }
        let keys = build_keys(&config, &ephemeral_secret)?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        metrics.config_generation.set(1);
        zero_series(&metrics, &config);
        let client = UpstreamClient::new(
            ClientSettings {
                connect_timeout: config.server.connect_timeout,
                request_timeout: config.server.upstream_timeout,
                max_redirects: config.server.max_redirects,
                max_response_bytes: config.server.max_body_bytes.max(256 * 1024),
                idle_timeout: config.server.backend_idle_timeout,
                max_idle: config.server.backend_max_idle_connections,
                extra_roots: config.server.upstream_roots.clone(),
            },
            metrics.clone(),
        )?;
        let upstreams = crate::backend::Upstreams::new(client);
        let tls = match &config.server.tls {
            Some(files) => Some(Arc::new(tls::CertResolver::load(files.clone())?)),
            None => None,
        };
        if let Some(settings) = &config.builtin {
            start_sfu(&upstreams, settings)?;
        }
        let config = Arc::new(config);
        let (relay_starts, relay_inbox) = tokio::sync::mpsc::unbounded_channel();
        Ok(Self {
            live: ArcSwap::from_pointee(Live {
                config,
                keys: Arc::new(keys),
                generation: 1,
            }),
            previous: ArcSwapOption::empty(),
            retired: Mutex::new(HashMap::new()),
            config_path: None,
            ephemeral_secret,
            status: Mutex::new(ReloadStatus {
                generation: 1,
                ..ReloadStatus::default()
            }),
            upstreams,
            registry: SessionRegistry::default(),
            health: Arc::new(HealthBoard::default()),
            metrics,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            metrics_listener: std::sync::atomic::AtomicBool::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            event_streams: std::sync::atomic::AtomicUsize::new(0),
            drain_running: tokio::sync::Mutex::new(()),
            drain_given_up: Mutex::new(std::collections::HashSet::new()),
            event_streams_per_session: Mutex::new(HashMap::new()),
            drained: Mutex::new(std::collections::HashSet::new()),
            moved: tokio::sync::Notify::new(),
            rate_limits: Mutex::new(None),
            probes: probes::Probes::default(),
            tls,
            clock: Clock::real(),
            relays: relay::Relays::default(),
            relay_starts,
            relay_inbox: Mutex::new(Some(relay_inbox)),
        })
    }

    /// Where `reload` reads routes.toml from.
    pub fn with_config_path(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    /// Replaces the clock (tests of expiry and rests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    fn keys(&self) -> Arc<Keyring> {
        self.live.load().keys.clone()
    }

    pub fn registry(&self) -> &SessionRegistry {
        &self.registry
    }

    pub fn health(&self) -> &HealthBoard {
        &self.health
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The client's turn under `rate_limit`; `Err` holds how long it should wait.
    pub(crate) fn rate_check(
        &self,
        config: &Config,
        client: std::net::IpAddr,
    ) -> Result<(), std::time::Duration> {
        let Some(settings) = config.server.rate_limit else {
            return Ok(());
        };
        let limiter = {
            let mut current = self.rate_limits.lock().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some((active, limiter)) if *active == settings => limiter.clone(),
                _ => {
                    let burst = std::num::NonZeroU32::new(settings.burst)
                        .unwrap_or(std::num::NonZeroU32::MIN);
                    let Ok(limiter) = crate::ratelimit::RateLimits::new(settings.per_second, burst)
                    else {
                        return Ok(());
                    };
                    let limiter = Arc::new(limiter);
                    *current = Some((settings, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check(client)
    }

    fn sweep_rate_limits(&self) {
        let limiter = self
            .rate_limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, l)| l.clone());
        if let Some(limiter) = limiter {
            limiter.sweep();
        }
    }

    /// Forgets sessions whose tokens have expired (no request can end them any more), so
    /// live counts and `max_sessions` do not keep them forever.
    fn expire_sessions(&self, config: &Config) {
        let now = self.clock.unix();
        let ttl = config.server.session_ttl.as_secs();
        if now < ttl {
            return;
        }
        for (session, seconds) in self.registry.expire(now, ttl) {
            let labels = [
                session.backend.as_str(),
                session.route.as_str(),
                session.kind.as_str(),
            ];
            self.metrics.sessions_live.with(&labels, |g| g.dec());
            self.count_session_time(config, &session.backend, seconds);
        }
    }

    /// Brings session-seconds, cost and backend health up to date, then renders every metric.
    pub fn render_metrics(&self) -> String {
        let config = self.config();
        self.expire_sessions(&config);
        for (backend, seconds) in self.registry.account(self.clock.unix()) {
            self.count_session_time(&config, &backend, seconds);
        }
        let now = self.clock.instant();
        for id in config.backends.keys() {
            let healthy = i64::from(self.health.is_available(&id.0, now));
            self.metrics
                .backend_healthy
                .with_label_values(&[id.0.as_str()])
                .set(healthy);
        }
        self.metrics.render()
    }

    fn count_session_time(&self, config: &Config, backend: &str, seconds: u64) {
        if seconds == 0 {
            return;
        }
        let seconds = seconds as f64;
        self.metrics
            .session_seconds
            .with_label_values(&[backend])
            .inc_by(seconds);
        if let Some(def) = self.backend_for_session(config, backend) {
            if def.cost_per_minute > 0.0 {
                self.metrics
                    .cost_estimate
                    .with_label_values(&[backend])
                    .inc_by(seconds / 60.0 * def.cost_per_minute);
            }
        }
    }

    /// Metrics and registry bookkeeping when a session ends through this replica. A session
    /// is counted as ended where its DELETE succeeded (any replica); it leaves the live count
    /// of the replica that created it only when that replica serves the DELETE.
    pub(super) fn session_ended(
        &self,
        config: &Config,
        claims: &crate::session::SessionClaims,
        deleted: bool,
    ) {
        let now = self.clock.unix();
        let labels = [
            claims.backend.as_str(),
            claims.route.as_str(),
            claims.kind.as_str(),
        ];
        let known = self.registry.remove(&claims.sid, now);
        if let Some((_, unaccounted)) = &known {
            self.metrics.sessions_live.with(&labels, |g| g.dec());
            self.count_session_time(config, &claims.backend, *unaccounted);
        }
        if deleted || known.is_some() {
            self.metrics.sessions_ended.with(&labels, |c| c.inc());
            self.metrics
                .session_duration
                .with(&[claims.backend.as_str(), claims.kind.as_str()], |h| {
                    h.observe(now.saturating_sub(claims.created) as f64)
                });
        }
    }

    /// Sessions of this replica whose backend says they ended without a DELETE (the
    /// built-in SFU's peer went quiet, closed or lost its publisher) stop counting: live
    /// gauges, `max_sessions`, `max_sessions_per_subject`. Kinds that cannot tell keep
    /// theirs until DELETE or the token's expiry.
    pub async fn reap_ended_sessions(&self) {
        let config = self.config();
        for backend in config.backends.values() {
            if !backend.adapter.reports_ended() {
                continue;
            }
            // Asked even with none of this replica's sessions: a kind may have work that is
            // not about them (Janus: keeping alive other replicas' publishers).
            let sessions = self.registry.on_backend(&backend.id.0);
            let (sessions, resources): (Vec<_>, Vec<_>) = sessions
                .into_iter()
                .filter_map(|(sid, s)| {
                    let url = crate::backend::origin::parse(&s.resource)
                        .ok()?
                        .url()
                        .clone();
                    Some(((sid, s), url))
                })
                .unzip();
            let Some(ended) = backend
                .adapter
                .ended(&self.upstreams, backend, &resources)
                .await
            else {
                continue;
            };
            for ((sid, session), gone) in sessions.into_iter().zip(ended) {
                if !gone {
                    continue;
                }
                tracing::info!(backend = %backend.id, sid = %sid, "session ended without a DELETE");
                self.session_ended(&config, &session.into_claims(sid), false);
            }
        }
    }

    /// Whether `backend` takes no new sessions and sends its clients elsewhere.
    pub fn is_draining(&self, backend: &BackendDef) -> bool {
        backend.drain
            || self
                .drained
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&backend.id.0)
    }

    /// Drains a backend (`POST /admin/drain`) or ends a drain; `false` when no such backend.
    pub fn set_drained(&self, backend: &str, drained: bool) -> bool {
        let config = self.config();
        if !config.backends.contains_key(&BackendId(backend.to_owned())) {
            return false;
        }
        let mut set = self.drained.lock().unwrap_or_else(|e| e.into_inner());
        if drained {
            set.insert(backend.to_owned());
        } else {
            set.remove(backend);
        }
        drop(set);
        self.moved.notify_waiters();
        true
    }

    /// Ends this replica's WHIP sessions on draining backends, so that their publishers
    /// reconnect (OBS, simple-whip-client and the publish page do on their own) and land on
    /// the route's next choice. Players are moved by their `reconnect` event instead: ending
    /// their sessions too would leave players without events nothing to follow.
    pub async fn end_drained_publishers(&self) {
        // The admin call and the reaper may both start one: one at a time.
        let Ok(_running) = self.drain_running.try_lock() else {
            return;
        };
        let config = self.config();
        let mut given_up = std::mem::take(
            &mut *self
                .drain_given_up
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut draining_any = false;
        for backend in config.backends.values() {
            if !self.is_draining(backend) {
                continue;
            }
            draining_any = true;
            for (sid, session) in self.registry.on_backend(&backend.id.0) {
                if session.kind != crate::kind::EndpointKind::Whip || given_up.contains(&sid) {
                    continue;
                }
                let Ok(resource) = crate::backend::origin::parse(&session.resource) else {
                    continue;
                };
                let stream = session.stream.clone();
                let claims = session.into_claims(sid.clone());
                let request_id = hex(&self.random_bytes::<8>());
                let ended = backend
                    .adapter
                    .delete(
                        &self.upstreams,
                        backend,
                        crate::backend::SessionRequest {
                            resource: &resource,
                            claims: &claims,
                            client_authorization: None,
                            request_id: &request_id,
                            client_ip: None,
                            now: self.clock.unix(),
                        },
                    )
                    .await;
                match ended {
                    Ok(()) => {
                        tracing::info!(backend = %backend.id, sid = %sid, stream = %stream, "publisher ended: its backend is draining");
                        self.session_ended(&config, &claims, true);
                    }
                    Err(crate::error::GatewayError::NotFound(_)) => {
                        self.session_ended(&config, &claims, false);
                    }
                    // Only the client's own credential could end it (passthrough auth):
                    // asking again every 5 s would not help. It ends when its client leaves.
                    Err(
                        error @ (crate::error::GatewayError::Unauthorized(_)
                        | crate::error::GatewayError::Forbidden(_)),
                    ) => {
                        tracing::warn!(backend = %backend.id, sid = %sid, %error, "cannot end a publisher of a draining backend without its client's credential; it stays until it leaves");
                        given_up.insert(sid);
                    }
                    Err(error) => {
                        tracing::warn!(backend = %backend.id, sid = %sid, %error, "could not end a publisher of a draining backend; trying again in 5 s");
                    }
                }
            }
        }
        // Remembered only while some drain lasts (so never more than the live sessions).
        if draining_any {
            *self
                .drain_given_up
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = given_up;
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads routes.toml; the new table serves only if all of it is valid.
    pub fn reload(&self) -> Result<u64, String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload from".into());
        };
        let result = Config::load(path, SecretMode::Resolve)
            .map_err(|e| e.to_string())
            .and_then(|config| self.apply(config));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        match &result {
            Ok(generation) => {
                self.metrics
                    .config_generation
                    .set(i64::try_from(*generation).unwrap_or(i64::MAX));
                status.generation = *generation;
                status.last_error = None;
                status.reloads_ok += 1;
                tracing::info!(generation, "routes reloaded");
            }
            Err(error) => {
                status.last_error = Some(error.clone());
                status.reloads_failed += 1;
                tracing::error!(%error, "routes.toml refused; the last good table keeps serving");
            }
        }
        result
    }

    /// Swaps in a validated table atomically; requests in flight finish on the old one.
    /// The listener's certificate is read again with it (new handshakes get it).
    pub fn apply(&self, config: Config) -> Result<u64, String> {
        let keys = build_keys(&config, &self.ephemeral_secret).map_err(|e| e.to_string())?;
        let certificate = self.certificate_for(&config)?;
        let old = self.live.load_full();
        let pending =
            restart_only_changes(&old.config, &config, self.upstreams.sfu.get().is_some());
        if !pending.is_empty() {
            tracing::warn!(
                settings = %pending.join(", "),
                "changed settings that take effect only after a restart"
            );
        }
        if let Some(settings) = &config.builtin {
            start_sfu(&self.upstreams, settings).map_err(|e| e.to_string())?;
        }
        let now = Instant::now();
        {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            for (id, def) in &old.config.backends {
                if !config.backends.contains_key(id) {
                    retired.insert(id.clone(), (def.clone(), now));
                }
            }
            retired.retain(|id, (_, since)| {
                !config.backends.contains_key(id)
                    && now.duration_since(*since) < config.server.session_ttl
            });
        }
        let generation = old.generation + 1;
        zero_series(&self.metrics, &config);
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.pending_restart = pending.iter().map(|s| (*s).to_owned()).collect();
        }
        let config = Arc::new(config);
        self.previous.store(Some(old.config.clone()));
        self.live.store(Arc::new(Live {
            config: config.clone(),
            keys: Arc::new(keys),
            generation,
        }));
        self.probes
            .restart(&config, &self.upstreams.client, &self.health);
        self.moved.notify_waiters();
        if let (Some(resolver), Some((files, pair))) = (&self.tls, certificate) {
            if resolver.install(files, pair) {
                tracing::info!("TLS certificate reloaded with the table");
            }
        }
        Ok(generation)
    }

    /// The pair a new table's `[server] tls_*` files hold, loaded before anything is swapped:
    /// a table whose certificate does not load is refused whole. Turning TLS on or off waits
    /// for a restart.
    fn certificate_for(
        &self,
        config: &Config,
    ) -> Result<Option<(tls::TlsFiles, rustls::sign::CertifiedKey)>, String> {
        match (&self.tls, &config.server.tls) {
            (Some(resolver), Some(files)) => {
                let pair = tls::load(files).map_err(|e| format!("TLS certificate: {e}"))?;
                if resolver.files() != *files {
                    tracing::warn!(
                        "changed tls_cert_file / tls_key_file are loaded now but watched for \
                         changes only after a restart"
                    );
                }
                Ok(Some((files.clone(), pair)))
            }
            // Turning TLS on or off waits for a restart (restart_only_changes says so).
            (None, Some(_)) | (Some(_), None) => Ok(None),
            (None, None) => Ok(None),
        }
    }

    /// The definition a session's backend had: the live table's, or the retired one.
    fn backend_for_session(&self, config: &Config, id: &str) -> Option<Arc<BackendDef>> {
        config.backends.get(id).cloned().or_else(|| {
            let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.get(id).map(|(def, _)| def.clone())
        })
    }

    /// Session ids, token nonces and request ids: a ChaCha generator per thread, seeded and
    /// periodically reseeded from the OS (one getrandom syscall per value cost about 2% of a
    /// request's CPU).
    fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        bytes
    }
}

fn build_keys(config: &Config, ephemeral: &[u8; 32]) -> Result<Keyring, crate::session::KeyError> {
    if config.server.session_keys.is_empty() {
        Keyring::new([("ephemeral".to_string(), ephemeral)])
    } else {
        Keyring::new(
            config
                .server
                .session_keys
                .iter()
                .map(|(id, secret)| (id.clone(), secret.expose().as_bytes())),
        )
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// A server accepting connections until [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// The separate metrics listener, when `[server] metrics_listen` asks for one.
    pub metrics_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish within the configured grace period.
    pub async fn shutdown(self) {
        self.gateway
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds the configured address (or `listen` when given) and starts serving: the main
/// listener on `[server] workers` threads of its own, the rest (metrics listener, probes,
/// expiry) on the caller's runtime.
pub async fn start(
    gateway: Gateway,
    listen: Option<SocketAddr>,
) -> Result<RunningServer, StartError> {
    let config = gateway.config();
    let address = listen.unwrap_or(config.server.listen);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| StartError::Listen(address, e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(address, e))?;
    let listener = listener
        .into_std()
        .map_err(|e| StartError::Listen(address, e))?;
    let gateway = Arc::new(gateway);
    let (stop, stopped) = watch::channel(false);
    let tls = match &gateway.tls {
        Some(resolver) => {
            let server_config = tls::server_config(resolver.clone())?;
            if let Err(error) = tls::follow(
                resolver.clone(),
                Duration::from_millis(100),
                stopped.clone(),
            ) {
                tracing::warn!(
                    %error,
                    "cannot watch the TLS files; SIGHUP or a routes.toml reload reloads them"
                );
            }
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config)))
        }
        None => None,
    };
    gateway
        .probes
        .restart(&config, &gateway.upstreams.client, &gateway.health);
    tokio::spawn(expire_periodically(gateway.clone(), stopped.clone()));
    let puller = pull::PullService::new(Arc::downgrade(&gateway));
    let _ = gateway.upstreams.puller.set(Arc::new(puller));
    if let Some(inbox) = gateway.relay_inbox.lock().ok().and_then(|mut i| i.take()) {
        tokio::spawn(relay::run(gateway.clone(), inbox, stopped.clone()));
    }
    let metrics_listener = match config.server.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| StartError::Listen(address, e))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    gateway
        .metrics_listener
        .store(metrics_addr.is_some(), std::sync::atomic::Ordering::Relaxed);
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(accept_loop(
            listener,
            Listener::Metrics,
            None,
            None,
            gateway.clone(),
            stopped.clone(),
            ConnectionLimits::of(&config),
        ))
    });
    // One worker per thread: a single-threaded event loop, so that a connection, the request
    // it carries and the backend connection serving that request never hop threads. Whichever
    // worker accepts a connection hands it to the one serving the fewest (balance.rs). Each
    // event loop is built and given the listener here, so that a worker that cannot start
    // fails the start.
    let seats = balance::Workers::seats(
        config.server.workers,
        gateway.metrics.worker_connections.clone(),
    );
    let mut workers = Vec::with_capacity(config.server.workers);
    for (index, seat) in seats.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
        let worker_listener = {
            let _inside = runtime.enter();
            listener
                .try_clone()
                .and_then(TcpListener::from_std)
                .map_err(|e| StartError::Listen(address, e))?
        };
        let serve = accept_loop(
            worker_listener,
            Listener::Main,
            Some(seat),
            tls.clone(),
            gateway.clone(),
            stopped.clone(),
            ConnectionLimits::of(&config),
        );
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("whipgate-worker-{index}"))
            .spawn(move || {
                runtime.block_on(serve);
                let _ = done.send(());
            })
            .map_err(StartError::Thread)?;
        workers.push(finished);
    }
    drop(listener);
    let task = tokio::spawn(async move {
        for worker in workers {
            let _ = worker.await;
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
    });
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        gateway,
        stop,
        task,
    })
}

/// Sessions whose tokens expired leave the registry within a minute.
async fn expire_periodically(gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    let mut reaper = tokio::time::interval(REAP_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                gateway.expire_sessions(&gateway.config());
                gateway.sweep_rate_limits();
            }
            _ = reaper.tick() => {
                gateway.reap_ended_sessions().await;
                gateway.end_drained_publishers().await;
            }
            _ = stopped.changed() => return,
        }
    }
}

/// The most time spent accepting the listen backlog at shutdown.
const BACKLOG_DRAIN: Duration = Duration::from_millis(200);

/// How often backends are asked which sessions ended without a DELETE.
const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs one connection; once the gateway stops, lets it finish its current request (waiting
/// for its first one, if it has not arrived yet) and closes it. A macro: hyper's connection
/// types are spelt differently for each transport.
macro_rules! serve_until_stopped {
    ($connection:expr, $activity:expr, $stopping:expr, $limits:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        let mut stopping = $stopping;
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = tokio::time::timeout($limits.header_read_timeout, $activity.first_request()) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }};
}

/// Serves `listener` until `stopped`, over TLS when `tls` is given. Each TLS handshake runs
/// in its connection's task, bounded by `header_read_timeout`; ALPN picks HTTP/2 or HTTP/1.1
/// (a client offering no ALPN gets whichever its first bytes speak).
///
/// Shutdown drains rather than cuts: for `shutdown_drain` after the signal new connections
/// are still accepted (readiness already fails, so balancers move away), then what waits in
/// the listen backlog is accepted too before the socket closes (closing it would reset
/// them). Every connection serves the request it was opened for, even one whose bytes have
/// not arrived yet, and closes after it, within `shutdown_grace` of the drain's end: a
/// shutdown takes at most `shutdown_drain` + `shutdown_grace` (and a moment for the backlog).
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    mut seat: Option<balance::WorkerSeat>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let protocols = Arc::new(Protocols::new(
        limits.header_read_timeout,
        limits.max_header_bytes,
    ));
    // Each connection task holds a sender: all have ended when `recv` sees none left.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    // The connections watch this loop's own copy of the stop signal, which it sets when it
    // sees the gateway's. A connection polls its stop signal on every wake-up, and polling a
    // watch takes the lock of its waiter list: one watch for every connection of every
    // worker would be a lock all cores take on every request.
    let (stop_connections, stopping) = watch::channel(false);
    let connection = Connection {
        kind,
        tls,
        gateway,
        protocols,
        limits,
        stopping,
        open,
    };
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let handed = async {
            match seat.as_mut() {
                Some(seat) => seat.inbox.recv().await,
                None => std::future::pending().await,
            }
        };
        let until = drain_until;
        let drained = async move {
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => Ok(accepted),
            Some(handed) = handed => Err(Some(handed)),
            _ = stopped.wait_for(|stop| *stop), if until.is_none() => Err(None),
            _ = drained => break,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(Some((stream, peer))) => {
                if let Some(seat) = &seat {
                    connection.adopt(stream, peer, seat);
                }
                continue;
            }
            Err(None) => {
                stop_connections.send_replace(true);
                drain_until = Some(tokio::time::Instant::now() + limits.drain);
                continue;
            }
        };
        match accepted {
            Ok((stream, peer)) => connection.place(stream, peer, seat.as_ref()),
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The backlog: connections the kernel completed that nobody accepted yet. Bounded, so
    // that clients that keep connecting cannot hold the shutdown open.
    let backlog_until = tokio::time::Instant::now() + BACKLOG_DRAIN;
    while let Ok(Ok((stream, peer))) = tokio::time::timeout_at(
        backlog_until.min(tokio::time::Instant::now() + Duration::from_millis(10)),
        listener.accept(),
    )
    .await
    {
        let load = seat.as_ref().map(balance::WorkerSeat::here);
        connection.spawn(stream, peer, load);
    }
    // Connections other workers handed over just before this one stopped taking them.
    if let Some(seat) = seat.as_mut() {
        seat.inbox.close();
        while let Ok((stream, peer)) = seat.inbox.try_recv() {
            connection.adopt(stream, peer, seat);
        }
    }
    drop(listener);
    connection.gateway.probes.stop();
    drop(connection);
    if tokio::time::timeout(limits.grace, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with requests still in flight");
    }
}

/// What every connection of one listener shares.
struct Connection {
    kind: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gateway: Arc<Gateway>,
    protocols: Arc<Protocols>,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
    open: tokio::sync::mpsc::Sender<()>,
}

impl Connection {
    /// Serves a connection this worker accepted, or hands it to a less busy worker.
    fn place(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        seat: Option<&balance::WorkerSeat>,
    ) {
        match seat {
            None => self.spawn(stream, peer, None),
            Some(seat) => {
                if let Some((stream, load)) = seat.place(stream, peer) {
                    self.spawn(stream, peer, Some(load));
                }
            }
        }
    }

    /// Serves a connection another worker handed to this one.
    fn adopt(&self, stream: std::net::TcpStream, peer: SocketAddr, seat: &balance::WorkerSeat) {
        let load = seat.adopt();
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => self.spawn(stream, peer, Some(load)),
            Err(error) => tracing::debug!(%error, %peer, "connection lost adopting it"),
        }
    }

    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr, load: Option<balance::Load>) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(conn::Activity::default());
        let gateway = self.gateway.clone();
        let (kind, secure) = (self.kind, self.tls.is_some());
        let counted = activity.clone();
        let service = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                let in_flight = counted.request();
                request.extensions_mut().insert(Arrival {
                    peer,
                    listener: kind,
                    tls: secure,
                });
                async move {
                    let response = gateway.handle(request).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(response)
                }
            });
        let service = TowerToHyperService::new(service);
        let limits = self.limits;
        let protocols = self.protocols.clone();
        let tls = self.tls.clone();
        let stopping = self.stopping.clone();
        let open = self.open.clone();
        tokio::spawn(async move {
            let _open = open;
            let _load = load;
            // hyper waits for a connection's first bytes without a timer (it reads them to
            // tell HTTP/1.1 from HTTP/2): a connection that never sends one would stay open
            // forever, and enough of them starve the process of file descriptors.
            let mut first = [0u8; 1];
            if tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first))
                .await
                .is_err()
            {
                tracing::debug!(%peer, "connection closed: nothing sent within header_read_timeout");
                return;
            }
            let io = conn::IdleTimeout::new(stream, activity.clone(), limits.idle);
            match tls {
                None => {
                    let served = protocols.any.serve_connection(TokioIo::new(io), service);
                    serve_until_stopped!(served, activity, stopping, limits);
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let builder = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => &protocols.h2,
                        Some(b"http/1.1") => &protocols.h1,
                        _ => &protocols.any,
                    };
                    let served = builder.serve_connection(TokioIo::new(stream), service);
                    serve_until_stopped!(served, activity, stopping, limits);
                }
            }
        });
    }
}

/// What bounds a connection, from `[server]` (read at start).
#[derive(Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    max_header_bytes: usize,
    idle: Duration,
    drain: Duration,
    grace: Duration,
}

impl ConnectionLimits {
    fn of(config: &Config) -> Self {
        Self {
            header_read_timeout: config.server.header_read_timeout,
            max_header_bytes: config.server.max_header_bytes,
            idle: config.server.connection_idle_timeout,
            drain: config.server.shutdown_drain,
            grace: config.server.shutdown_grace,
        }
    }
}

/// Connection builders: either protocol by its first bytes, or the one ALPN chose.
struct Protocols {
    any: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(header_read_timeout: Duration, max_header_bytes: usize) -> Self {
        let mut any = auto::Builder::new(TokioExecutor::new());
        any.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            // hyper refuses buffers below 8 KiB (it panics): the config loader clamps.
            .max_buf_size(max_header_bytes);
        any.http2()
            .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
        Self {
            h1: any.clone().http1_only(),
            h2: any.clone().http2_only(),
            any,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(super::hex(&[]), "");
    }
}
