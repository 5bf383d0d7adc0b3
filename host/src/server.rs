//! Starting and stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Config, ServerConfig};
use crate::identity::Authenticator;
use crate::log::{EventLog, TailLimits};
use crate::plugin::{PluginEngine, Reloader};
use crate::{http, secrets, store};

/// A running server. Dropping it does not stop it: call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    serve_task: JoinHandle<()>,
    flush_task: JoinHandle<()>,
    prune_task: JoinHandle<()>,
    odoo_task: Option<JoinHandle<()>>,
}

/// Opens the database (running migrations), loads the log's tail and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    start_on(config, listener).await
}

/// Like [`start`], on a listener the caller bound.
pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<Server> {
    let flush_every = Duration::from_millis(config.sync.position_flush_ms.max(1));
    let watch_every = config
        .plugins
        .watch
        .then(|| Duration::from_millis(config.plugins.watch_interval_ms));
    let app = open_app(config, store::Access::Write).await?;
    let addr = listener.local_addr()?;

    let (stop, stopped) = watch::channel(false);
    let router = http::router(app.clone());
    let limits = connection_limits(&app.config.server);
    let serve_task = tokio::spawn(http::serve(listener, router, limits, stopped.clone()));
    if let Some(every) = watch_every {
        tokio::spawn(app.plugins.clone().watch(every, stopped.clone()));
    }
    let prune_task = tokio::spawn(crate::retention::run(app.clone(), stopped.clone()));
    let odoo_task = odoo_worker(&app)?.map(|worker| tokio::spawn(worker.run(stopped.clone())));
    let flush_task = tokio::spawn(flush_positions(app.clone(), flush_every, stopped));
    tracing::info!(%addr, head = app.log.head(), "smartsync listening");
    Ok(Server {
        addr,
        app,
        stop,
        serve_task,
        flush_task,
        prune_task,
        odoo_task,
    })
}

/// The worker that reads Odoo, when `[odoo.models]` names a model.
fn odoo_worker(app: &Arc<App>) -> anyhow::Result<Option<crate::odoo::Worker>> {
    let config = &app.config;
    if !config.odoo.enabled() {
        return Ok(None);
    }
    let credentials = crate::odoo::Credentials {
        url: config.odoo_url().to_string(),
        database: config.odoo.database.clone(),
        login: config.odoo.login.clone(),
        api_key: config.odoo.api_key.clone().unwrap_or_default(),
    };
    let client =
        crate::odoo::Client::new(credentials, Duration::from_millis(config.odoo.timeout_ms))
            .map_err(anyhow::Error::msg)?;
    Ok(Some(crate::odoo::Worker {
        source: crate::odoo::Source {
            client,
            store: app.store.clone(),
            log: app.log.clone(),
            page_size: config.odoo.page_size,
            keeps_every_record: config.retention.mode == crate::config::RetentionMode::Compact,
        },
        config: config.odoo.clone(),
        status: app.odoo.clone(),
    }))
}

/// Everything but the HTTP listener: the database (migrated), the log's tail and writer, the
/// plugins, sessions and secrets. `smartsync plugin replay` uses it without serving, with
/// [`store::Access::Read`].
pub async fn open_app(config: Config, access: store::Access) -> anyhow::Result<Arc<App>> {
    let auth = Authenticator::new(&config.auth).map_err(anyhow::Error::msg)?;
    if auth.is_static() {
        tracing::warn!(
            "auth.mode is \"static\": sessions come from the config file, not Odoo. Do not use this in production."
        );
    }
    // The store first: a second server on the same database stops at its lock before it
    // touches anything beside it, such as generating secrets.toml.
    let store = store::open(&config.database.store_settings(), access).await?;
    let secrets = secrets::resolve(&config).map_err(anyhow::Error::msg)?;
    let log = EventLog::open(
        store.clone(),
        TailLimits {
            max_events: config.database.tail_events,
            max_bytes: config.database.tail_max_bytes,
        },
        config.ingest.group_commit_max_events,
    )
    .await?;
    let plugins = Arc::new(open_plugins(&config)?);
    Ok(Arc::new(App::new(
        config, store, log, auth, secrets, plugins,
    )))
}

/// The plugin engine (with its compile cache) and the plugins of plugins.toml.
pub fn open_plugins(config: &Config) -> anyhow::Result<Reloader> {
    let cache_dir = config
        .plugins
        .cache_dir
        .clone()
        .unwrap_or_else(|| secrets::data_dir(config).join("plugin-cache"));
    let engine = PluginEngine::new(Some(&cache_dir))?;
    Reloader::open(engine, config.plugins.file.clone()).map_err(anyhow::Error::msg)
}

/// Descriptors kept for everything but clients' connections: the database's files, the
/// plugins, Odoo, connections being turned away.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The connection limits of `server`, with `max_connections` lowered to what the process's
/// open-files limit leaves room for: past it, accepting fails and nobody is answered.
fn connection_limits(server: &ServerConfig) -> http::Limits {
    let secs = Duration::from_secs;
    let mut max_connections = server.max_connections;
    #[cfg(unix)]
    if let Some(open_files) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    {
        let room = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if max_connections > room {
            tracing::warn!(
                configured = max_connections,
                open_files,
                serving = room,
                "server.max_connections is more than the open-files limit leaves room for; \
                 lowered (raise the limit, e.g. LimitNOFILE= in a systemd unit)"
            );
            max_connections = room;
        }
    }
    http::Limits {
        timeouts: http::Timeouts {
            header: secs(server.header_timeout_secs),
            body: secs(server.body_timeout_secs),
            idle: secs(server.idle_timeout_secs),
            send: secs(server.send_timeout_secs),
        },
        max_connections,
        max_connections_per_ip: server.max_connections_per_ip,
    }
}

async fn flush_positions(app: Arc<App>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::util::stopped(&mut stopped) => return,
        }
        match app.positions.flush().await {
            Ok(_) => {
                let let_go = app.positions.evict_idle(app.config.sync.max_cached_devices);
                if let_go > 0 {
                    tracing::debug!(let_go, "idle devices' positions let go from memory");
                }
            }
            // A full disk is said once, by the store's appends; positions wait in memory.
            Err(e) if e.is_storage_full() => {
                tracing::debug!(error = %e, "writing device positions: the disk is full; will retry");
            }
            Err(e) => tracing::error!(error = %e, "writing device positions failed; will retry"),
        }
    }
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting connections, lets requests in flight finish (up to
    /// `server.shutdown_grace_secs`), commits queued events and writes every position.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.app.stopping.send_replace(true);
        let _ = self.stop.send(true);
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        match tokio::time::timeout(grace, self.serve_task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("requests still in flight after the grace period"),
        }
        let _ = self.flush_task.await;
        let _ = self.prune_task.await;
        if let Some(task) = self.odoo_task {
            let _ = task.await;
        }
        self.app.log.close().await;
        let flushed = self.app.positions.flush().await;
        self.app.store.close().await;
        flushed?;
        tracing::info!("smartsync stopped");
        Ok(())
    }
}
