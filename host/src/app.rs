//! The assembled server: everything a request handler needs, built once at start.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::ApiError;
use crate::identity::Authenticator;
use crate::log::EventLog;
use crate::plugin::{AppFeed, Reloader};
use crate::positions::Positions;
use crate::secrets::Secrets;
use crate::store::EventStore;
use crate::token::TokenKey;

/// What one app_type's clients receive: the filter-and-shape step between reading the log and
/// answering a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub app_type: String,
    /// The models this feed receives; the log is read for these only.
    pub models: Vec<String>,
}

pub struct App {
    pub config: Config,
    pub store: Arc<dyn EventStore>,
    pub log: Arc<EventLog>,
    /// The server's own reading of Odoo (import, sweep, ids check), as the admin API shows it.
    pub odoo: Arc<crate::odoo::Status>,
    pub positions: Arc<Positions>,
    pub tokens: TokenKey,
    pub auth: Authenticator,
    pub secrets: Secrets,
    pub plugins: Arc<Reloader>,
    /// Set when the server begins to shut down: long-polling pulls answer at once.
    pub stopping: tokio::sync::watch::Sender<bool>,
    feeds: HashMap<String, Arc<Feed>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<dyn EventStore>,
        log: EventLog,
        auth: Authenticator,
        secrets: Secrets,
        plugins: Arc<Reloader>,
    ) -> App {
        let feeds = config
            .app_types
            .iter()
            .map(|(name, app)| {
                (
                    name.clone(),
                    Arc::new(Feed {
                        app_type: name.clone(),
                        models: app.models.clone(),
                    }),
                )
            })
            .collect();
        let odoo = Arc::new(crate::odoo::Status::new(&config.odoo, config.odoo_url()));
        App {
            odoo,
            positions: Arc::new(Positions::new(store.clone())),
            tokens: TokenKey::new(secrets.token_secret.as_bytes()),
            config,
            store,
            log: Arc::new(log),
            auth,
            secrets,
            plugins,
            stopping: tokio::sync::watch::Sender::new(false),
            feeds,
        }
    }

    /// What a pull of `app_type` goes through: its enabled plugin, else its model list;
    /// 403 `app_type_disabled` when plugins.toml has it switched off, 400 `unknown_app_type`
    /// when nothing names it.
    pub fn feed(&self, app_type: &str) -> Result<AppFeed, ApiError> {
        let plugins = self.plugins.current();
        if let Some(active) = plugins.active.get(app_type) {
            return Ok(AppFeed::Plugin(active.clone()));
        }
        if plugins.names_app_type(app_type) {
            return Err(ApiError::forbidden(
                "app_type_disabled",
                format!("app_type {app_type:?} is switched off in plugins.toml"),
            ));
        }
        if let Some(feed) = self.feeds.get(app_type) {
            return Ok(AppFeed::Models(feed.clone()));
        }
        let mut known: Vec<String> = self.app_types();
        known.sort_unstable();
        Err(ApiError::bad_request(
            "unknown_app_type",
            format!(
                "app_type {app_type:?} is not configured; known: {}",
                known.join(", ")
            ),
        ))
    }

    /// Every app_type a client may name.
    pub fn app_types(&self) -> Vec<String> {
        let mut all: Vec<String> = self.feeds.keys().cloned().collect();
        for entry in self.plugins.current().entries.values() {
            if !all.contains(&entry.app_type) {
                all.push(entry.app_type.clone());
            }
        }
        all
    }
}
