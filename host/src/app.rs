//! The assembled server: everything a request handler needs, built once at start.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::ApiError;
use crate::identity::Authenticator;
use crate::log::EventLog;
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
    pub log: EventLog,
    pub positions: Positions,
    pub tokens: TokenKey,
    pub auth: Authenticator,
    pub secrets: Secrets,
    feeds: HashMap<String, Arc<Feed>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<dyn EventStore>,
        log: EventLog,
        auth: Authenticator,
        secrets: Secrets,
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
        App {
            positions: Positions::new(store.clone()),
            tokens: TokenKey::new(secrets.token_secret.as_bytes()),
            config,
            store,
            log,
            auth,
            secrets,
            feeds,
        }
    }

    /// The feed of `app_type`, or 400 `unknown_app_type`.
    pub fn feed(&self, app_type: &str) -> Result<Arc<Feed>, ApiError> {
        self.feeds.get(app_type).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = self.feeds.keys().map(String::as_str).collect();
            known.sort_unstable();
            ApiError::bad_request(
                "unknown_app_type",
                format!(
                    "app_type {app_type:?} is not configured; known: {}",
                    known.join(", ")
                ),
            )
        })
    }
}
