//! The `whipgate` command: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use whipgate::config::{Config, SecretMode};
use whipgate::server::{self, Gateway};

// glibc's malloc and free were about 8% of whipgate's CPU samples under load; mimalloc gave
// 5-8% more requests per second (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "whipgate", version, about = "A WHIP/WHEP gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WHIP and WHEP on the configured address.
    Serve {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Overrides `[server] listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a routes file and print a one-line summary.
    Check {
        /// The routes file.
        #[arg(default_value = "routes.toml")]
        config: PathBuf,
        /// Check only the file's shape, without reading secrets from env or files.
        #[arg(long)]
        skip_secrets: bool,
    },
    /// Print the name of every Prometheus metric whipgate exposes.
    Metrics,
    /// Show which route and backends a request would get, and why.
    Explain {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = KindArg::Whip)]
        kind: KindArg,
        /// The stream name (as decoded from the URL).
        #[arg(long)]
        stream: String,
        /// A request header, `name:value` (as the admin API takes it) or `name=value`
        /// (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// The client's address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// The request's host.
        #[arg(long)]
        host: Option<String>,
        /// The request's raw query string.
        #[arg(long)]
        query: Option<String>,
        /// The client's bearer token (or JWT), checked by every [client_auth.NAME] as a
        /// request's would be, so routes on tier and claims can match; reads the secrets.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Whip,
    Whep,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            skip_secrets,
        } => {
            let mode = if skip_secrets {
                SecretMode::Skip
            } else {
                SecretMode::Resolve
            };
            match Config::load(&config, mode) {
                Ok(loaded) => {
                    println!("{}: ok: {}", config.display(), loaded.summary());
                    for warning in loaded.warnings() {
                        eprintln!("{}: warning: {warning}", config.display());
                    }
                    for (route, by) in loaded.routes.unreachable() {
                        eprintln!(
                            "{}: warning: route `{}` can never match: route `{}` before it catches all of its requests",
                            config.display(),
                            route.id,
                            by.id
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Metrics => {
            for name in whipgate::metrics::Metrics::new().names() {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Command::Explain {
            config,
            kind,
            stream,
            headers,
            ip,
            host,
            query,
            token,
        } => match explain(&config, kind, stream, &headers, ip, host, query, token) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error:#}");
                ExitCode::from(1)
            }
        },
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            init_logging(log_format);
            // Requests are served by `[server] workers` threads of their own (server::start);
            // this loop only runs signals, reloads, probes and the metrics listener.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cannot start the runtime: {error}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(serve(config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    // Logging goes to stderr too: one line, in the chosen log format.
                    tracing::error!("{error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    path: &std::path::Path,
    kind: KindArg,
    stream: String,
    headers: &[String],
    ip: Option<std::net::IpAddr>,
    host: Option<String>,
    query: Option<String>,
    token: Option<String>,
) -> anyhow::Result<String> {
    // A token is checked as a request's would be, which needs the real keys and tokens.
    let mode = if token.is_some() {
        SecretMode::Resolve
    } else {
        SecretMode::Skip
    };
    let config = Config::load(path, mode)?;
    let identities = match &token {
        Some(token) => {
            let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            config.accepted_identities(Some(&value), now)
        }
        None => Vec::new(),
    };
    let mut header_map = http::HeaderMap::new();
    for header in headers {
        // Header names hold neither ':' nor '=', so the first of either separates.
        let (name, value) = header
            .split_once([':', '='])
            .ok_or_else(|| anyhow::anyhow!("--header takes name:value, not {header:?}"))?;
        header_map.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())?,
            http::HeaderValue::from_str(value.trim())?,
        );
    }
    let stream = whipgate::routing::StreamName::new(stream)?;
    let host = host.map(|h| h.to_ascii_lowercase());
    let facts = whipgate::routing::RequestFacts {
        kind: match kind {
            KindArg::Whip => whipgate::kind::EndpointKind::Whip,
            KindArg::Whep => whipgate::kind::EndpointKind::Whep,
        },
        stream: &stream,
        host: host.as_deref(),
        headers: &header_map,
        query: query.as_deref(),
        client_ip: ip,
        identities: &identities,
    };
    Ok(config.explain(&facts))
}

async fn serve(path: PathBuf, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let config = Config::load(&path, SecretMode::Resolve)?;
    let summary = config.summary_at(listen.unwrap_or(config.server.listen));
    let gateway = Gateway::new(config)?.with_config_path(path.clone());
    let running = server::start(gateway, listen).await?;
    // Before the "serving" line: a signal sent once that line is seen must find its handler.
    let _watch = spawn_reloads(&running, &path);
    let stop = shutdown_signal();
    tracing::info!(address = %running.local_addr, "whipgate serving {}: {summary}", path.display());
    stop.await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    Ok(())
}

/// Reloads routes.toml when the file changes and on SIGHUP.
fn spawn_reloads(
    running: &server::RunningServer,
    path: &std::path::Path,
) -> Option<whipgate::config::ConfigWatch> {
    let gateway = running.gateway.clone();
    let watch = match whipgate::config::watch(path, std::time::Duration::from_millis(20)) {
        Ok((watch, mut changed)) => {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                while changed.recv().await.is_some() {
                    let _ = gateway.reload();
                }
            });
            Some(watch)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config directory; reload with SIGHUP or the admin API");
            None
        }
    };
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let _ = gateway.reload();
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
    }
    watch
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// first polled), so call it before announcing readiness.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,webrtc_sdp=error"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
