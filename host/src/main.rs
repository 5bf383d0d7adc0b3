//! `smartsync`: the Smart Sync server and its admin commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smartsync::Config;
use smartsync::config::{EXAMPLE, LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "smartsync",
    version,
    about = "Smart Sync: Odoo changes, filtered per app, pulled by devices"
)]
struct Cli {
    /// Config file. Default: $SMARTSYNC_CONFIG, else ./smartsync.toml when it exists, else the
    /// embedded default (SQLite under ./data/, 127.0.0.1:8080, development sessions).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or Ctrl-C.
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Config helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example config with every key and its default.
    Example,
    /// Load and validate the config (with environment overrides), then print it.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Example,
    } = cli.command
    {
        print!("{EXAMPLE}");
        return ExitCode::SUCCESS;
    }
    let config = match load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("smartsync: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("smartsync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                let store = smartsync::store::open(&config.database).await?;
                let head = store.last_event_id().await?;
                store.close().await;
                println!("database is up to date ({head} events so far)");
                Ok(())
            }
            Command::Config { .. } => {
                let mut shown = config;
                for secret in [
                    &mut shown.secrets.token_secret,
                    &mut shown.secrets.ingest_token,
                ] {
                    if secret.is_some() {
                        *secret = Some("<redacted>".into());
                    }
                }
                print!("{}", toml::to_string_pretty(&shown)?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("smartsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(flag: Option<&Path>) -> Result<Config, smartsync::config::ConfigError> {
    let from_env = std::env::var_os("SMARTSYNC_CONFIG").map(PathBuf::from);
    let default = Path::new("smartsync.toml");
    let path = flag
        .map(Path::to_path_buf)
        .or(from_env)
        .or_else(|| default.exists().then(|| default.to_path_buf()));
    Config::load(path.as_deref(), std::env::vars())
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = smartsync::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
