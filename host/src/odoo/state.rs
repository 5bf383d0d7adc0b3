//! How far the server got with each synced model, kept in the store (`sources`, as
//! `odoo:<model>`) so that a restart goes on where it stopped.

use serde::{Deserialize, Serialize};

use crate::store::{EventStore, StoreError};

/// One model's progress. Times are UTC, RFC 3339 when they are this server's, Odoo's
/// `YYYY-MM-DD HH:MM:SS` when they are compared with Odoo's `write_date`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelState {
    /// The import read every record with an id up to this one.
    pub import_after: i64,
    /// When the import finished; `None` while it has not.
    pub import_finished_at: Option<String>,
    /// When the current or last import began.
    pub import_started_at: Option<String>,
    /// Records the import read, and how many of them the log did not hold yet.
    pub import_read: u64,
    pub import_stored: u64,
    /// The next sweep reads the records Odoo changed at or after this `write_date` (Odoo's
    /// format, UTC).
    pub sweep_from: Option<String>,
    /// When the last sweep finished.
    pub last_sweep_at: Option<String>,
    /// Versions the last sweep found that the log did not hold, and every sweep since the
    /// model was connected: webhooks Odoo lost (or never sent, while the server was down).
    pub last_sweep_recovered: u64,
    pub sweep_recovered: u64,
    /// When the ids of the log and of Odoo were last compared, and what that found: records
    /// deleted without a webhook, and records the log had lost or held as deleted.
    pub ids_checked_at: Option<String>,
    pub deletions_recovered: u64,
    pub records_recovered: u64,
    /// When the server last received a webhook for the model (saved with each sweep).
    pub last_webhook_at: Option<String>,
    /// The fields the last import read: when the config carries others, the model is imported
    /// again, so that every record reaches devices with them.
    pub fields: Vec<String>,
}

impl ModelState {
    pub fn imported(&self) -> bool {
        self.import_finished_at.is_some()
    }
}

const PREFIX: &str = "odoo:";

/// Every model's saved progress, by model.
pub async fn load(
    store: &dyn EventStore,
) -> Result<std::collections::BTreeMap<String, ModelState>, StoreError> {
    let mut states = std::collections::BTreeMap::new();
    for (name, text) in store.sources().await? {
        let Some(model) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let state = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("source {name}: {e}")))?;
        states.insert(model.to_string(), state);
    }
    Ok(states)
}

pub async fn save(
    store: &dyn EventStore,
    model: &str,
    state: &ModelState,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(state)
        .map_err(|e| StoreError::Corrupt(format!("source odoo:{model}: {e}")))?;
    store.save_source(&format!("{PREFIX}{model}"), &text).await
}
