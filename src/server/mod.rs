//! The HTTP front door: a hyper server whose one service is [`Gateway::handle`].
//!
//! The listener, graceful shutdown and tower layers live here; what each endpoint does lives
//! in `handlers`.

mod cors;
mod handlers;
mod response;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::backend::{ClientSettings, UpstreamClient};
use crate::config::Config;
use crate::session::{Keyring, SessionRegistry};

pub use response::Body;

/// Unix seconds; injected so that tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Everything a request needs: the live config, keys, the upstream client, this replica's
/// session registry.
pub struct Gateway {
    config: ArcSwap<Config>,
    keys: Keyring,
    client: UpstreamClient,
    registry: SessionRegistry,
    random: SystemRandom,
    clock: Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("session keys: {0}")]
    Keys(#[from] crate::session::KeyError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("no randomness available")]
    Random,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Self, StartError> {
        let random = SystemRandom::new();
        let keys = if config.server.session_keys.is_empty() {
            let mut secret = [0u8; 32];
            random.fill(&mut secret).map_err(|_| StartError::Random)?;
            tracing::warn!(
                "no session_keys configured: using an ephemeral key; sessions will not survive \
                 a restart or be served by another replica"
            );
            Keyring::new([("ephemeral".to_string(), secret)])?
        } else {
            Keyring::new(
                config
                    .server
                    .session_keys
                    .iter()
                    .map(|(id, secret)| (id.clone(), secret.expose().as_bytes())),
            )?
        };
        let client = UpstreamClient::new(ClientSettings {
            connect_timeout: config.server.connect_timeout,
            request_timeout: config.server.upstream_timeout,
            max_redirects: config.server.max_redirects,
            max_response_bytes: config.server.max_body_bytes.max(256 * 1024),
            extra_roots: config.server.upstream_roots.clone(),
        })?;
        Ok(Self {
            config: ArcSwap::from_pointee(config),
            keys,
            client,
            registry: SessionRegistry::default(),
            random,
            clock: Arc::new(unix_now),
        })
    }

    /// Replaces the clock (tests of expiry).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn registry(&self) -> &SessionRegistry {
        &self.registry
    }

    fn random_bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        // SystemRandom reads the OS generator, which does not fail once the process runs.
        if self.random.fill(&mut bytes).is_err() {
            tracing::error!("system random generator failed");
        }
        bytes
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A server accepting connections until [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish within the configured grace period.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds the configured address (or `listen` when given) and starts serving.
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
    let gateway = Arc::new(gateway);
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        gateway.clone(),
        stopped,
        config.server.header_read_timeout,
        config.server.shutdown_grace,
    ));
    Ok(RunningServer {
        local_addr,
        gateway,
        stop,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stopped: watch::Receiver<bool>,
    header_read_timeout: Duration,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(request).await) }
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with requests still in flight");
    }
}
