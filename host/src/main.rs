//! `smartsync`: the Smart Sync server and its admin commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use smartsync::Config;
use smartsync::config::{EXAMPLE, LogFormat};
use smartsync::plugin::tools;
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
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The connection to Odoo (`[odoo]` in the config).
    Odoo {
        #[command(subcommand)]
        command: OdooCommand,
    },
}

#[derive(Subcommand)]
enum OdooCommand {
    /// Check the credentials, then create or update in Odoo the webhook rules of every synced
    /// model (on creation, update and deletion). Run it again at any time: it changes only what
    /// differs.
    Connect {
        /// Say what would change, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Each synced model's rules in Odoo (present, missing, differing), its import, the last
    /// webhook, the last sweep and what it recovered, the last ids check.
    Status,
    /// Read every record of these models (default: every synced model) from Odoo again, through
    /// the running server, or here when none runs. Versions the log holds are not stored twice.
    Import { models: Vec<String> },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin, print its manifest, and call it once on sample events.
    Check {
        /// The plugin's .wasm (a component built for wasm32-wasip2).
        wasm: PathBuf,
    },
    /// Call a plugin on events from a file and print what a device would receive.
    Run {
        wasm: PathBuf,
        /// A JSON array of events: {"id", "model", "record_id", "event", "timestamp"?, "payload"?, "changed_fields"?}.
        #[arg(long)]
        events: PathBuf,
        /// A JSON object: {"user_id", "device_id"?, "app_type"?, "company_ids"?, "lang"?, "tz"?, "config"?}.
        #[arg(long)]
        context: PathBuf,
    },
    /// Show what a device would receive from the live log through the configured plugin,
    /// without moving any position. Reads the server's config, database and plugins.toml.
    Replay {
        #[arg(long)]
        app_type: String,
        #[arg(long)]
        user_id: i64,
        /// Start at the position of this device (default: the beginning of the log).
        #[arg(long)]
        device_id: Option<String>,
        /// Start at this sync token (needs the --device-id it was issued to).
        #[arg(long, value_name = "TOKEN", requires = "device_id")]
        from: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
        /// The user's allowed companies, as the plugin sees them.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        company_ids: Vec<i64>,
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
    if let Command::Plugin { command } = cli.command {
        if let PluginCommand::Replay { .. } = command {
            return replay_command(cli.config.as_deref(), command);
        }
        return plugin_command(command);
    }
    let config = match load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("smartsync: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                let store = smartsync::store::open(
                    &config.database.store_settings(),
                    smartsync::store::Access::Write,
                )
                .await?;
                let head = store.last_event_id().await?;
                store.close().await;
                println!("database is up to date ({head} events so far)");
                Ok(())
            }
            Command::Plugin { .. } => Ok(()),
            Command::Odoo { command } => {
                let report = match command {
                    OdooCommand::Connect { dry_run } => {
                        smartsync::odoo::commands::connect(&config, dry_run).await?
                    }
                    OdooCommand::Status => smartsync::odoo::commands::status(&config).await?,
                    OdooCommand::Import { models } => {
                        smartsync::odoo::commands::import(&config, &models).await?
                    }
                };
                print!("{report}");
                Ok(())
            }
            Command::Config { .. } => {
                let mut shown = config;
                for secret in [
                    &mut shown.secrets.token_secret,
                    &mut shown.secrets.ingest_token,
                    &mut shown.secrets.admin_token,
                    &mut shown.odoo.api_key,
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("smartsync: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
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

fn plugin_command(command: PluginCommand) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        match command {
            PluginCommand::Check { wasm } => {
                let plugin = tools::load(&wasm, &Default::default())?;
                println!("{}", serde_json::to_string_pretty(&plugin.manifest)?);
                let (sent, kept) = tools::check(&plugin).await?;
                println!(
                    "ok: {} (version {}) shaped {sent} sample events into {kept}",
                    plugin.label, plugin.manifest.version
                );
                Ok(())
            }
            PluginCommand::Replay { .. } => Ok(()),
            PluginCommand::Run {
                wasm,
                events,
                context,
            } => {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
                };
                let given: Vec<tools::GivenEvent> = serde_json::from_str(&read(&events)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", events.display()))?;
                let ctx: tools::GivenContext = serde_json::from_str(&read(&context)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", context.display()))?;
                let plugin = tools::load(&wasm, &ctx.config)?;
                let events = tools::logged(given)?;
                let out = tools::run(&plugin, &ctx, &events).await?;
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("smartsync plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay_command(config_path: Option<&Path>, command: PluginCommand) -> ExitCode {
    let PluginCommand::Replay {
        app_type,
        user_id,
        device_id,
        from,
        limit,
        company_ids,
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let mut config = match load_config(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("smartsync: {e}");
            return ExitCode::from(2);
        }
    };
    // A dry run: no watching, no writes beyond what opening the database needs.
    config.plugins.watch = false;
    init_logging(&config);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result: anyhow::Result<String> = runtime.block_on(async move {
        let app = smartsync::server::open_app(config, smartsync::store::Access::Read).await?;
        let identity = smartsync::identity::Identity {
            uid: user_id,
            company_ids,
            lang: None,
            tz: None,
        };
        let key = smartsync::positions::DeviceKey {
            user_id,
            device_id: device_id.unwrap_or_else(|| "replay".into()),
            app_type,
        };
        let answer = smartsync::sync::replay(&app, &identity, key, from.as_deref(), limit)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"));
        app.log.close().await;
        app.store.close().await;
        let body: serde_json::Value = serde_json::from_str(&answer?.to_json())?;
        Ok(serde_json::to_string_pretty(&body)?)
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smartsync plugin replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    let server = smartsync::start(config).await?;
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let plugins = server.app().plugins.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading plugins.toml");
                let _ = plugins.reload().await;
            }
        });
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown().await
}

/// Every waiting pull and event stream holds a socket: lift the soft limit on open files (1024
/// on many systems) to the hard limit the administrator allows.
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            limit.current = limit.maximum;
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::debug!(error = %e, "cannot raise the open files limit");
            }
        }
        tracing::debug!(open_files = ?getrlimit(Resource::Nofile).current, "open files limit");
    }
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
