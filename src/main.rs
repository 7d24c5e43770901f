//! The `whipgate` command: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use whipgate::config::{Config, SecretMode};
use whipgate::server::{self, Gateway};

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
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            init_logging(log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
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
                    tracing::error!("{error:#}");
                    eprintln!("whipgate: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve(path: PathBuf, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let config = Config::load(&path, SecretMode::Resolve)?;
    let summary = config.summary();
    let gateway = Gateway::new(config)?;
    let running = server::start(gateway, listen).await?;
    tracing::info!(address = %running.local_addr, "whipgate serving {}: {summary}", path.display());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
