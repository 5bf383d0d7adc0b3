//! `smartsync.toml`: every setting, its default, environment overrides and validation.
//!
//! Every key can be overridden by an environment variable named `SMARTSYNC_` followed by the
//! key's path in upper case, with `__` between levels: `server.listen` is
//! `SMARTSYNC_SERVER__LISTEN`, `app_types.sales_app.models` is
//! `SMARTSYNC_APP_TYPES__SALES_APP__MODELS` (`SMARTSYNC_TEST_*` are the test suite's, and not
//! read). Values are read as TOML when they parse as TOML
//! (`true`, `60`, `["a", "b"]`) and as plain strings otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// The commented example printed by `smartsync config example`.
pub const EXAMPLE: &str = include_str!("../smartsync.example.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SMARTSYNC_";

/// Prefix of the variables the test suite reads (`SMARTSYNC_TEST_DATABASE_URL`): not config
/// keys, and left alone by the server.
pub const TEST_PREFIX: &str = "SMARTSYNC_TEST_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub auth: AuthConfig,
    pub sync: SyncConfig,
    pub ingest: IngestConfig,
    pub log: LogConfig,
    pub plugins: PluginsConfig,
    pub retention: RetentionConfig,
    pub odoo: OdooConfig,
    /// The app_types clients may name in a pull, and what each one sees when plugins.toml has
    /// no plugin for it.
    pub app_types: BTreeMap<String, AppTypeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Gzip answers when the client sends `Accept-Encoding: gzip`.
    pub compression: bool,
    /// Answers smaller than this are sent uncompressed.
    pub compression_min_bytes: u16,
    /// Browser origins allowed to call the API. `*` as the port matches any port
    /// (`http://localhost:*`); a lone `*` allows every origin.
    pub cors_origins: Vec<String>,
    /// How long a shutdown waits for requests in flight, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's headers, from the connection's accept or
    /// the request's first byte, in seconds; a connection that stalls longer is closed.
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's body once its headers are in, in
    /// seconds; a slower one is answered 408 `request_timeout` and its connection closed.
    pub body_timeout_secs: u64,
    /// How long a keep-alive connection stays open waiting for its next request, in seconds.
    pub idle_timeout_secs: u64,
    /// How long the server waits for a client to take any of an answer it is sending, in
    /// seconds; a client that reads nothing for longer has its connection closed.
    pub send_timeout_secs: u64,
    /// Most connections served at once (further ones are answered 503 `too_many_connections`).
    /// Lowered, with a warning, to what the process's open-files limit leaves room for.
    pub max_connections: usize,
    /// Most connections served at once from one IP address; 0: no limit of its own. Leave it
    /// at 0 behind a reverse proxy, whose connections all come from one address.
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (created when missing).
    pub url: String,
    /// SQLite's `synchronous`: `full` survives power loss, `normal` only process crashes.
    pub synchronous: String,
    /// Connections of the pool that serves reads. Writes have one connection of their own.
    pub max_connections: u32,
    /// How many recent events the server keeps in memory to answer pulls without reading the
    /// database.
    pub tail_events: usize,
    /// Upper bound on the memory the in-memory tail may hold, in bytes.
    pub tail_max_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Key for sync tokens. Changing it invalidates every token handed out.
    #[serde(
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub token_secret: Option<String>,
    /// Bearer token for `POST /api/v2/events`, and `?token=` for the Odoo webhook.
    #[serde(
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ingest_token: Option<String>,
    /// Bearer token for the admin API (`/api/v2/admin/...`).
    #[serde(
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub admin_token: Option<String>,
    /// Where generated secrets are kept when the ones above are not set. Default: `secrets.toml`
    /// beside the SQLite file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Sessions are checked against Odoo.
    Odoo,
    /// Sessions are listed in this file. For development only.
    Static,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Base URL of Odoo, for `auth.mode = "odoo"`.
    pub odoo_url: String,
    /// How long to wait for Odoo, in milliseconds.
    pub odoo_timeout_ms: u64,
    /// How long a session Odoo accepted is trusted without asking again, in seconds.
    pub cache_ok_secs: u64,
    /// How long a session Odoo refused stays refused without asking again, in seconds.
    pub cache_error_secs: u64,
    /// `auth.mode = "static"`: session id → user id, or a table with `uid`, `company_ids`,
    /// `lang` and `tz`.
    pub sessions: BTreeMap<String, StaticSession>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StaticSession {
    Uid(i64),
    Full(StaticSessionFull),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticSessionFull {
    pub uid: i64,
    #[serde(default = "default_company_ids")]
    pub company_ids: Vec<i64>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
}

fn default_company_ids() -> Vec<i64> {
    vec![1]
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Page size when a pull names no `limit`.
    pub default_limit: i64,
    /// Largest page a pull may ask for; larger limits are lowered to it.
    pub max_limit: i64,
    /// How many log positions one pull may scan past when reading from the database; a pull
    /// that scans this far without filling its page answers what it has with `has_more`.
    pub scan_window: i64,
    /// How often positions kept in memory are written to the database, in milliseconds.
    pub position_flush_ms: u64,
    /// The longest `wait` a pull may ask for, in seconds; longer waits are shortened to it.
    pub max_wait_secs: u64,
    /// How often an idle event stream sends a heartbeat, in seconds.
    pub stream_heartbeat_secs: u64,
    /// Most devices whose positions are kept in memory (0: no limit). Beyond it, the devices
    /// that pulled longest ago and are not pulling now are let go once their position is
    /// written; their next pull reads it from the database again.
    pub max_cached_devices: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events one `POST /api/v2/events` may carry.
    pub max_batch_events: usize,
    /// Most events gathered from waiting requests into one group for the database. Groups that
    /// queue up while a commit runs share the next transaction (until it holds 8192 or more).
    pub group_commit_max_events: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Which plugin shapes each app_type's feed. Relative to the working directory; a missing
    /// file means no plugins.
    pub file: PathBuf,
    /// Where compiled plugins are cached. Default: `plugin-cache` beside the SQLite file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Reload when plugins.toml or a `.wasm` it names changes.
    pub watch: bool,
    /// How often the watcher looks, in milliseconds.
    pub watch_interval_ms: u64,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            file: PathBuf::from("plugins.toml"),
            cache_dir: None,
            watch: true,
            watch_interval_ms: 500,
        }
    }
}

/// What the log keeps, and for how long.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Every record's latest state is kept, whatever its age: a record's older changes are
    /// folded into a newer one once that one is older than `compact_after`, and deletions are
    /// kept for `tombstone_ttl`. A device that never pulled reads every record it may see.
    #[default]
    Compact,
    /// Events are deleted by age (`max_age`) and count (`max_events`), whatever they are.
    Prune,
}

/// What the log keeps, and for how long. A device that may have missed something it needed
/// (an event pruned, a deletion dropped) is told to reset (`cursor_too_old`), never handed a
/// log with a hole in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `compact` (the default) or `prune`. A config that sets `max_age` or `max_events` and no
    /// mode prunes, as it did before compaction existed.
    pub mode: RetentionMode,
    /// `compact`: a change is folded into a newer change of its record, and dropped, once that
    /// newer change is older than this; every change of the last `compact_after` stays as it
    /// came. A number and a unit (`1d`, `12h`); `0` folds as soon as compaction runs.
    pub compact_after: Span,
    /// `compact`: how long a deletion is kept (a tombstone) for devices that hold the record;
    /// then it is dropped with what is left of the record, and devices positioned before it
    /// reset. `0` keeps deletions for ever.
    pub tombstone_ttl: Span,
    /// `prune`: events received longer ago than this are deleted: a number and a unit (`30d`,
    /// `12h`, `90m`, `45s`); `0` keeps events whatever their age.
    pub max_age: Span,
    /// `prune`: at most this many of the newest events are kept; 0 sets no limit.
    pub max_events: u64,
    /// How often retention runs, in seconds.
    pub interval_secs: u64,
    /// Event ids handled per transaction, so that ingest never waits long for the database.
    pub batch_events: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            mode: RetentionMode::Compact,
            compact_after: Span::from_secs(86_400),
            tombstone_ttl: Span::from_secs(90 * 86_400),
            max_age: Span::from_secs(30 * 86_400),
            max_events: 0,
            interval_secs: 60,
            batch_events: 2_000,
        }
    }
}

impl RetentionConfig {
    /// Whether retention ever deletes anything.
    pub fn runs(&self) -> bool {
        match self.mode {
            RetentionMode::Compact => true,
            RetentionMode::Prune => !self.max_age.is_zero() || self.max_events > 0,
        }
    }
}

/// A length of time written as a number and a unit: `30d`, `12h`, `90m`, `45s` (`0`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(std::time::Duration);

impl Span {
    pub const fn from_secs(secs: u64) -> Span {
        Span(std::time::Duration::from_secs(secs))
    }

    pub fn duration(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Span::from_secs(0));
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => 0,
        };
        match number.parse::<u64>() {
            Ok(n) if unit_secs > 0 => n
                .checked_mul(unit_secs)
                .map(Span::from_secs)
                .ok_or_else(|| format!("{text:?} is too long")),
            _ => Err(format!(
                "{text:?} is not a length of time: write a number and a unit, as in \"30d\", \"12h\", \"90m\" or \"45s\""
            )),
        }
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "0"),
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        // `0` arrives as an integer from TOML and from environment variables.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(text) => text,
            Raw::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The server's own connection to Odoo: it reads every record of the synced models once (the
/// import), then the changes Odoo's webhooks did not deliver (the sweep) and the deletions
/// that left no trace (the deletion check), and `smartsync odoo connect` creates the webhook
/// rules. Off while `models` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OdooConfig {
    /// Base URL of Odoo (`https://erp.example.com`); empty: `auth.odoo_url`.
    pub url: String,
    /// The Odoo database.
    pub database: String,
    /// The Odoo user the server reads as: it must see every record of the synced models, and
    /// may create automation rules for `smartsync odoo connect`.
    pub login: String,
    /// An API key of that user (Odoo: Preferences, Account Security, New API Key), or its
    /// password. Never shown in logs or by `smartsync config show`.
    #[serde(
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key: Option<String>,
    /// How long one call to Odoo may take, in milliseconds.
    pub timeout_ms: u64,
    /// Records read per call (import, sweep), and ids per call (deletion check: ten times it).
    pub page_size: u32,
    /// How often the sweep asks Odoo for what changed since the last one.
    pub sweep_interval: Span,
    /// How far back each sweep looks beyond the previous one's start: more than the clock
    /// difference between this server and Odoo's database plus the longest Odoo transaction.
    pub sweep_overlap: Span,
    /// How often the records alive in the log are compared with the ids Odoo has, for models
    /// with `track_deletions`. `0`: never.
    pub deletion_check_interval: Span,
    /// How long the ids check leaves a record alone after its newest event arrived: Odoo posts
    /// webhooks before its transaction commits, so a record just created may not be readable
    /// yet, and one just deleted may still be.
    pub deletion_check_grace: Span,
    /// The URL Odoo's webhook rules post to, as Odoo reaches this server
    /// (`http://smartsync.internal:8080`); `smartsync odoo connect` adds the path and token.
    pub webhook_base_url: String,
    /// The synced models (`[odoo.models."sale.order"]`), and what is carried of each.
    pub models: BTreeMap<String, OdooModelConfig>,
}

/// One synced Odoo model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OdooModelConfig {
    /// The fields carried in payloads, by the webhook rules, the import and the sweep alike.
    /// `write_date` is always carried (versions are told apart by it), and Odoo adds `id`.
    pub fields: Vec<String>,
    /// Whether records deleted in Odoo without a webhook (cascades, SQL, during an outage) are
    /// found by the deletion check and deleted from devices.
    #[serde(default = "yes")]
    pub track_deletions: bool,
}

fn yes() -> bool {
    true
}

impl OdooModelConfig {
    /// The fields read from Odoo: `fields` and `write_date`, sorted, each once.
    pub fn read_fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = self.fields.clone();
        fields.push("write_date".into());
        fields.sort();
        fields.dedup();
        fields
    }
}

impl Default for OdooConfig {
    fn default() -> Self {
        OdooConfig {
            url: String::new(),
            database: String::new(),
            login: String::new(),
            api_key: None,
            timeout_ms: 30_000,
            page_size: 500,
            sweep_interval: Span::from_secs(60),
            sweep_overlap: Span::from_secs(300),
            deletion_check_interval: Span::from_secs(600),
            deletion_check_grace: Span::from_secs(60),
            webhook_base_url: String::new(),
            models: BTreeMap::new(),
        }
    }
}

impl OdooConfig {
    /// Whether the server connects to Odoo by itself.
    pub fn enabled(&self) -> bool {
        !self.models.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `smartsync=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppTypeConfig {
    /// The Odoo models this app_type's clients receive events of.
    pub models: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            compression: true,
            compression_min_bytes: 1024,
            cors_origins: vec!["http://localhost:*".into(), "http://127.0.0.1:*".into()],
            shutdown_grace_secs: 30,
            header_timeout_secs: 15,
            body_timeout_secs: 30,
            idle_timeout_secs: 90,
            send_timeout_secs: 60,
            max_connections: 20_000,
            max_connections_per_ip: 0,
        }
    }
}

impl DatabaseConfig {
    /// What the store is opened with.
    pub fn store_settings(&self) -> crate::store::Settings {
        crate::store::Settings {
            url: self.url.clone(),
            synchronous: self.synchronous.clone(),
            max_connections: self.max_connections,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/smartsync.db".into(),
            synchronous: "full".into(),
            max_connections: 8,
            tail_events: 20_000,
            tail_max_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Odoo,
            odoo_url: "http://localhost:8069".into(),
            odoo_timeout_ms: 5_000,
            cache_ok_secs: 60,
            cache_error_secs: 5,
            sessions: BTreeMap::new(),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            default_limit: 100,
            max_limit: 1000,
            scan_window: 10_000,
            position_flush_ms: 200,
            max_wait_secs: 60,
            stream_heartbeat_secs: 15,
            max_cached_devices: 100_000,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch_events: 1000,
            group_commit_max_events: 4096,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let app_types = [
            (
                "sales_app",
                &["sale.order", "res.partner", "product.template"][..],
            ),
            ("delivery_app", &["stock.picking"][..]),
            (
                "manager_app",
                &[
                    "sale.order",
                    "res.partner",
                    "stock.picking",
                    "account.move",
                    "hr.expense",
                    "product.template",
                ][..],
            ),
        ]
        .into_iter()
        .map(|(name, models)| {
            (
                name.to_string(),
                AppTypeConfig {
                    models: models.iter().map(|m| m.to_string()).collect(),
                },
            )
        })
        .collect();
        Config {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            secrets: SecretsConfig::default(),
            auth: AuthConfig::default(),
            sync: SyncConfig::default(),
            ingest: IngestConfig::default(),
            log: LogConfig::default(),
            plugins: PluginsConfig::default(),
            retention: RetentionConfig::default(),
            odoo: OdooConfig::default(),
            app_types,
        }
    }
}

impl Config {
    /// What `smartsync serve` runs with when there is no config file: a SQLite file under
    /// `./data/`, `127.0.0.1:8080`, and development sessions for the seed's users.
    pub fn embedded() -> Config {
        let mut config = Config::default();
        config.auth.mode = AuthMode::Static;
        config.auth.sessions = [2, 5, 42]
            .into_iter()
            .map(|uid| (format!("dev-session-{uid}"), StaticSession::Uid(uid)))
            .collect();
        config
    }

    /// Reads `path` (or the embedded default when `None`), applies the environment overrides in
    /// `env`, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    message: format!("cannot read {}: {e}", path.display()),
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError {
                    message: format!("{}: {e}", path.display()),
                })?;
                (table, path.display().to_string())
            }
            None => {
                let table = toml::Table::try_from(Config::embedded()).map_err(|e| ConfigError {
                    message: format!("embedded default: {e}"),
                })?;
                (table, "the embedded default".to_string())
            }
        };
        let from_env = apply_env_overrides(&mut table, env)?;
        prune_when_pruning_is_configured(&mut table);
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.inner().to_string();
                let key_source = from_env
                    .iter()
                    .find(|(key, _)| env_key_caused(key, &path, &inner))
                    .map(|(_, var)| format!(" (set by {var})"))
                    .unwrap_or_default();
                ConfigError {
                    message: if path == "." {
                        format!("{source}: {}", e.inner())
                    } else {
                        format!("{source}: `{path}`{key_source}: {}", e.inner())
                    },
                }
            })?;
        config.validate().map_err(|message| ConfigError {
            message: format!("{source}: {message}"),
        })?;
        Ok(config)
    }

    /// Checks what the types cannot: ranges, addresses, URLs, consistency between keys.
    pub fn validate(&self) -> Result<(), String> {
        self.server
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("`server.listen` = {:?}: {e}", self.server.listen))?;
        if self.server.max_body_bytes < 1024 {
            return Err("`server.max_body_bytes` must be at least 1024".into());
        }
        for (key, value) in [
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("server.send_timeout_secs", self.server.send_timeout_secs),
        ] {
            if value == 0 {
                return Err(format!("`{key}` must be at least 1"));
            }
        }
        if self.server.max_connections == 0 {
            return Err("`server.max_connections` must be at least 1".into());
        }
        for origin in &self.server.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "`server.cors_origins`: {origin:?} is not an origin (http://host[:port] or https://host[:port])"
                ));
            }
        }
        if crate::store::sqlite_path(&self.database.url).is_none() {
            return Err(format!(
                "`database.url` = {:?}: expected sqlite://path/to/file.db",
                self.database.url
            ));
        }
        if !["off", "normal", "full", "extra"].contains(&self.database.synchronous.as_str()) {
            return Err(format!(
                "`database.synchronous` = {:?}: expected off, normal, full or extra",
                self.database.synchronous
            ));
        }
        if self.database.max_connections < 2 {
            return Err("`database.max_connections` must be at least 2".into());
        }
        if self.database.tail_events == 0 {
            return Err("`database.tail_events` must be at least 1".into());
        }
        for (key, value) in [
            ("secrets.token_secret", &self.secrets.token_secret),
            ("secrets.ingest_token", &self.secrets.ingest_token),
            ("secrets.admin_token", &self.secrets.admin_token),
        ] {
            if let Some(value) = value
                && value.len() < 16
            {
                return Err(format!("`{key}` must be at least 16 characters long"));
            }
        }
        match self.auth.mode {
            AuthMode::Odoo => {
                let url = &self.auth.odoo_url;
                if reqwest::Url::parse(url).is_err()
                    || !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(format!(
                        "`auth.odoo_url` = {url:?}: expected http(s)://host[:port]"
                    ));
                }
            }
            AuthMode::Static => {
                if self.auth.sessions.is_empty() {
                    return Err(
                        "`auth.mode` is \"static\" but `auth.sessions` lists no session".into(),
                    );
                }
            }
        }
        if self.sync.max_limit < 1 {
            return Err("`sync.max_limit` must be at least 1".into());
        }
        if self.sync.default_limit < 1 || self.sync.default_limit > self.sync.max_limit {
            return Err(format!(
                "`sync.default_limit` ({}) must be between 1 and `sync.max_limit` ({})",
                self.sync.default_limit, self.sync.max_limit
            ));
        }
        if self.sync.scan_window < self.sync.max_limit {
            return Err("`sync.scan_window` must be at least `sync.max_limit`".into());
        }
        if self.ingest.max_batch_events == 0 || self.ingest.group_commit_max_events == 0 {
            return Err(
                "`ingest.max_batch_events` and `ingest.group_commit_max_events` must be at least 1"
                    .into(),
            );
        }
        if self.sync.stream_heartbeat_secs == 0 {
            return Err("`sync.stream_heartbeat_secs` must be at least 1".into());
        }
        if self.retention.interval_secs == 0 || self.retention.batch_events == 0 {
            return Err(
                "`retention.interval_secs` and `retention.batch_events` must be at least 1".into(),
            );
        }
        if self.plugins.watch_interval_ms == 0 {
            return Err("`plugins.watch_interval_ms` must be at least 1".into());
        }
        self.validate_odoo()?;
        if self.app_types.is_empty() {
            return Err("`app_types` names no app_type".into());
        }
        for (name, app) in &self.app_types {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`app_types.{name}`: an app_type name uses letters, digits and `_`"
                ));
            }
            if app.models.is_empty() {
                return Err(format!("`app_types.{name}.models` is empty"));
            }
            if let Some(bad) = app.models.iter().find(|m| !crate::ingest::valid_model(m)) {
                return Err(format!(
                    "`app_types.{name}.models`: {bad:?} is not an Odoo model name"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The Odoo URL the server reads records from: `odoo.url`, else `auth.odoo_url`.
    pub fn odoo_url(&self) -> &str {
        if self.odoo.url.is_empty() {
            &self.auth.odoo_url
        } else {
            &self.odoo.url
        }
    }

    fn validate_odoo(&self) -> Result<(), String> {
        let odoo = &self.odoo;
        if !odoo.enabled() {
            return Ok(());
        }
        let url = self.odoo_url();
        if reqwest::Url::parse(url).is_err()
            || !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "`odoo.url` = {url:?}: expected http(s)://host[:port] (or set `auth.odoo_url`)"
            ));
        }
        for (key, value) in [
            ("odoo.database", &odoo.database),
            ("odoo.login", &odoo.login),
        ] {
            if value.is_empty() {
                return Err(format!("`odoo.models` is set, so `{key}` is needed"));
            }
        }
        if odoo.api_key.as_deref().is_none_or(str::is_empty) {
            return Err(
                "`odoo.models` is set, so `odoo.api_key` is needed (or SMARTSYNC_ODOO__API_KEY)"
                    .into(),
            );
        }
        if odoo.timeout_ms == 0 || odoo.page_size == 0 {
            return Err("`odoo.timeout_ms` and `odoo.page_size` must be at least 1".into());
        }
        if odoo.sweep_interval.is_zero() {
            return Err("`odoo.sweep_interval` must be longer than 0".into());
        }
        if !odoo.webhook_base_url.is_empty()
            && (reqwest::Url::parse(&odoo.webhook_base_url).is_err()
                || !(odoo.webhook_base_url.starts_with("http://")
                    || odoo.webhook_base_url.starts_with("https://")))
        {
            return Err(format!(
                "`odoo.webhook_base_url` = {:?}: expected http(s)://host[:port]",
                odoo.webhook_base_url
            ));
        }
        for (model, settings) in &odoo.models {
            if !crate::ingest::valid_model(model) {
                return Err(format!(
                    "`odoo.models`: {model:?} is not an Odoo model name"
                ));
            }
            if let Some(bad) = settings.fields.iter().find(|f| {
                f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return Err(format!(
                    "`odoo.models.\"{model}\".fields`: {bad:?} is not a field name"
                ));
            }
        }
        Ok(())
    }
}

/// A `[retention]` table that sets `max_age` or `max_events` and no `mode` was written before
/// compaction existed: it keeps pruning.
fn prune_when_pruning_is_configured(table: &mut toml::Table) {
    if let Some(toml::Value::Table(retention)) = table.get_mut("retention")
        && !retention.contains_key("mode")
        && (retention.contains_key("max_age") || retention.contains_key("max_events"))
    {
        retention.insert("mode".into(), toml::Value::String("prune".into()));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("config: {message}")]
pub struct ConfigError {
    message: String,
}

/// Applies `SMARTSYNC_A__B=value` overrides to `table`; returns (key path, variable) pairs.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) && k != "SMARTSYNC_CONFIG" && !k.starts_with(TEST_PREFIX)
        })
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                message: format!("{var}: malformed name: use SMARTSYNC_SECTION__KEY"),
            });
        }
        let value = parse_env_value(&raw);
        let mut node = &mut *table;
        for (depth, key) in path.iter().enumerate() {
            if depth + 1 == path.len() {
                node.insert(key.clone(), value);
                break;
            }
            let entry = node
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError {
                        message: format!("{var}: `{}` is not a table", path[..=depth].join(".")),
                    });
                }
            };
        }
        applied.push((path.join("."), var));
    }
    Ok(applied)
}

/// Whether the override of `key` is what failed at `path` with `message`: either the value at
/// that key is wrong, or the key itself is unknown to the table at `path`.
fn env_key_caused(key: &str, path: &str, message: &str) -> bool {
    if key == path || path.starts_with(&format!("{key}.")) || path.starts_with(&format!("{key}[")) {
        return true;
    }
    let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let parent = if parent.is_empty() { "." } else { parent };
    parent == path && message.contains(&format!("`{leaf}`"))
}

fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Accepts a number where a string is expected: an environment variable holding a numeric
/// secret arrives as a TOML integer.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        S(String),
        I(i64),
        F(f64),
    }
    Ok(Option::<Lenient>::deserialize(d)?.map(|v| match v {
        Lenient::S(s) => s,
        Lenient::I(i) => i.to_string(),
        Lenient::F(f) => f.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("smartsync.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    #[test]
    fn the_example_is_a_valid_config() {
        let (_dir, path) = write(EXAMPLE);
        let config = Config::load(Some(&path), env(&[])).expect("example loads");
        assert_eq!(config.auth.mode, AuthMode::Odoo);
    }

    #[test]
    fn embedded_default_is_static_with_dev_sessions() {
        let config = Config::load(None, env(&[])).expect("embedded default loads");
        assert_eq!(config.auth.mode, AuthMode::Static);
        assert!(config.auth.sessions.contains_key("dev-session-5"));
        assert_eq!(config.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let (_dir, path) = write("[server]\nlisen = \"0.0.0.0:1\"\n");
        let err = Config::load(Some(&path), env(&[])).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("lisen"), "{msg}");
        assert!(msg.contains("smartsync.toml"), "{msg}");
    }

    #[test]
    fn env_overrides_every_key_and_names_the_variable_on_error() {
        let config = Config::load(
            None,
            env(&[
                ("SMARTSYNC_SERVER__LISTEN", "0.0.0.0:9000"),
                ("SMARTSYNC_SYNC__MAX_LIMIT", "50"),
                ("SMARTSYNC_SYNC__DEFAULT_LIMIT", "20"),
                ("SMARTSYNC_SECRETS__INGEST_TOKEN", "12345678901234567890"),
                ("SMARTSYNC_APP_TYPES__SALES_APP__MODELS", "[\"sale.order\"]"),
                ("OTHER_VAR", "ignored"),
                // The test suite's, not a config key.
                ("SMARTSYNC_TEST_DATABASE_URL", "postgres://localhost/x"),
            ]),
        )
        .expect("overrides apply");
        assert_eq!(config.server.listen, "0.0.0.0:9000");
        assert_eq!(config.sync.max_limit, 50);
        assert_eq!(
            config.secrets.ingest_token.as_deref(),
            Some("12345678901234567890")
        );
        assert_eq!(config.app_types["sales_app"].models, vec!["sale.order"]);

        let err = Config::load(None, env(&[("SMARTSYNC_SERVER__LISTN", "x")]))
            .expect_err("unknown env key");
        let msg = err.to_string();
        assert!(msg.contains("SMARTSYNC_SERVER__LISTN"), "{msg}");
        assert!(msg.contains("listn"), "{msg}");
    }

    #[test]
    fn retention_compacts_unless_a_config_prunes() {
        for (text, mode) in [
            ("", RetentionMode::Compact),
            (
                "[retention]\ncompact_after = \"2h\"\n",
                RetentionMode::Compact,
            ),
            // Written before compaction existed: it keeps pruning.
            ("[retention]\nmax_age = \"7d\"\n", RetentionMode::Prune),
            ("[retention]\nmax_events = 100\n", RetentionMode::Prune),
            (
                "[retention]\nmode = \"compact\"\nmax_age = \"7d\"\n",
                RetentionMode::Compact,
            ),
        ] {
            let (_dir, path) = write(text);
            let config = Config::load(Some(&path), env(&[])).expect(text);
            assert_eq!(config.retention.mode, mode, "{text}");
        }
        let (_dir, path) = write("");
        let config = Config::load(
            Some(&path),
            env(&[("SMARTSYNC_RETENTION__MAX_EVENTS", "10")]),
        )
        .expect("an override");
        assert_eq!(config.retention.mode, RetentionMode::Prune);
        assert_eq!(
            Config::load(None, env(&[]))
                .expect("embedded")
                .retention
                .mode,
            RetentionMode::Compact
        );
    }

    #[test]
    fn validation_names_the_key() {
        let (_dir, path) = write("[sync]\ndefault_limit = 5000\n");
        let msg = Config::load(Some(&path), env(&[]))
            .expect_err("bad limit")
            .to_string();
        assert!(msg.contains("sync.default_limit"), "{msg}");

        let (_dir, path) = write("[auth]\nmode = \"static\"\n");
        let msg = Config::load(Some(&path), env(&[]))
            .expect_err("static without sessions")
            .to_string();
        assert!(msg.contains("auth.sessions"), "{msg}");

        let (_dir, path) = write("[retention]\nmax_age = \"30 days\"\n");
        let msg = Config::load(Some(&path), env(&[]))
            .expect_err("bad span")
            .to_string();
        assert!(msg.contains("retention.max_age"), "{msg}");
        assert!(msg.contains("30d"), "{msg}");
    }

    #[test]
    fn spans_read_and_write_with_their_unit() {
        for (text, secs) in [
            ("0", 0),
            ("45s", 45),
            ("90m", 5400),
            ("12h", 43_200),
            ("30d", 2_592_000),
        ] {
            let span: Span = text.parse().expect(text);
            assert_eq!(span.duration().as_secs(), secs, "{text}");
        }
        assert_eq!(Span::from_secs(5400).to_string(), "90m");
        assert_eq!(Span::from_secs(61).to_string(), "61s");
        for bad in ["", "d", "3", "3w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} was accepted");
        }
        let config = Config::load(
            None,
            env(&[
                ("SMARTSYNC_RETENTION__MAX_AGE", "0"),
                ("SMARTSYNC_RETENTION__MAX_EVENTS", "500"),
            ]),
        )
        .expect("overrides apply");
        assert!(config.retention.max_age.is_zero());
        assert_eq!(config.retention.max_events, 500);
    }
}
