//! The server's side of Odoo: what its webhooks post, and what the server reads by itself so
//! that nothing Odoo changed is missed.
//!
//! Odoo's "Send Webhook Notification" posts once, with a one-second timeout and no retry: a
//! post that fails, and every change made while this server is down, is lost. So beside the
//! webhooks (`webhook`, the fast path) the server reads Odoo itself (`rpc`), per synced model:
//!
//! - the **import** (`import`) reads every existing record once, in pages by id, resumable;
//! - the **sweep** (`sweep`) reads, every `sweep_interval`, what changed since the last sweep
//!   began (minus `sweep_overlap`), and appends what the log does not hold: the guarantee;
//! - the **ids check** (`ids`) compares the ids Odoo has with the records alive in the log,
//!   and appends the deletions that left no trace (and brings back what the log lost);
//! - the **deletion check** (`unlinks`) asks Odoo whether each deletion a webhook announced
//!   really happened (Odoo posts before its own checks may refuse the deletion).
//!
//! Whichever path brings a version, it is the same event with the same dedupe key
//! (`version`), so one version is stored once. `worker` runs the three in the background and
//! keeps the status the admin API shows; `state` keeps each model's progress in the store;
//! `rules` checks and makes the webhook rules in Odoo (`smartsync odoo connect`).

pub mod append;
pub mod commands;
pub mod ids;
pub mod import;
pub mod rpc;
pub mod rules;
pub mod state;
pub mod sweep;
pub mod unlinks;
pub mod version;
pub mod webhook;
pub mod worker;

use std::sync::Arc;

use crate::config::OdooModelConfig;
use crate::log::{AppendError, EventLog};
use crate::store::{EventStore, StoreError};

pub use rpc::{Client, Credentials, RpcError};
pub use state::ModelState;
pub use worker::{Status, Worker};

/// Why reading a model from Odoo stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("the log: {0}")]
    Store(#[from] StoreError),
    #[error("the log: {0}")]
    Append(#[from] AppendError),
}

/// What the import, the sweep and the ids check work with.
pub struct Source {
    pub client: Client,
    pub store: Arc<dyn EventStore>,
    pub log: Arc<EventLog>,
    /// Records per `search_read`.
    pub page_size: u32,
    /// Whether the log keeps every record's latest state (compaction). When it prunes
    /// instead, a record it never saw may be one it pruned: the ids check then does not bring
    /// such records back, which it would do at every check.
    pub keeps_every_record: bool,
}

/// One synced model.
pub struct Model<'a> {
    pub name: &'a str,
    pub settings: &'a OdooModelConfig,
}

/// An Odoo datetime (`YYYY-MM-DD HH:MM:SS`, UTC), as domains compare `write_date` with.
pub fn odoo_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}
