//! Runs the import, the sweep and the ids check in the background, and keeps their status.
//!
//! On start the worker logs in to Odoo, imports every model whose import has not finished
//! (resuming where it stopped), then sweeps every `sweep_interval` and checks ids every
//! `deletion_check_interval`. When Odoo is slow or down, or refuses the login, nothing else
//! waits on it: pulls and ingest go on, the worker retries with a growing pause (1 s to
//! 5 minutes), and the status says what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::import::Progress;
use super::state::{self, ModelState};
use super::{Model, RpcError, Source, SyncError, ids, import, sweep};
use crate::config::OdooConfig;
use crate::event::now_rfc3339;

/// Where the connection to Odoo stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// `[odoo]` names no model: the server does not read Odoo.
    Off,
    Connecting,
    Connected,
    /// The last attempt failed; the worker retries after a pause.
    Failing,
}

/// One model, as the status shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelStatus {
    /// `waiting`, `importing`, `sweeping`, `checking_ids` or `idle`.
    pub phase: &'static str,
    /// The running import's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportProgress>,
    /// Webhooks received for the model since the server started.
    pub webhooks_received: u64,
    /// Why the model's last import, sweep or ids check failed, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub state: ModelState,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ImportProgress {
    pub read: u64,
    pub stored: u64,
    pub total: u64,
}

/// What the admin API shows of the Odoo connection.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub connection: Connection,
    /// Odoo's URL, database and login (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odoo: Option<serde_json::Value>,
    /// The last failure, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the worker tries again, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_secs: Option<u64>,
    pub models: BTreeMap<String, ModelStatus>,
}

/// The worker's status, shared with the admin API and the webhook endpoint.
pub struct Status {
    view: Mutex<StatusView>,
    /// When the worker tries again, while failing.
    retry_at: Mutex<Option<Instant>>,
    /// Models an admin asked to import again.
    import_requests: Mutex<BTreeSet<String>>,
    wake: Notify,
}

impl Status {
    pub fn new(config: &OdooConfig, url: &str) -> Status {
        let connection = if config.enabled() {
            Connection::Connecting
        } else {
            Connection::Off
        };
        let odoo = config.enabled().then(
            || serde_json::json!({"url": url, "database": config.database, "login": config.login}),
        );
        let models = config
            .models
            .keys()
            .map(|m| {
                (
                    m.clone(),
                    ModelStatus {
                        phase: "waiting",
                        ..ModelStatus::default()
                    },
                )
            })
            .collect();
        Status {
            view: Mutex::new(StatusView {
                connection,
                odoo,
                error: None,
                retry_in_secs: None,
                models,
            }),
            retry_at: Mutex::new(None),
            import_requests: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        }
    }

    pub fn view(&self) -> StatusView {
        let mut view = self.view.lock().clone();
        view.retry_in_secs = self
            .retry_at
            .lock()
            .map(|at| at.saturating_duration_since(Instant::now()).as_secs());
        view
    }

    /// Notes a webhook for `model`.
    pub fn webhook_received(&self, model: &str) {
        let mut view = self.view.lock();
        if let Some(status) = view.models.get_mut(model) {
            status.state.last_webhook_at = Some(now_rfc3339());
            status.webhooks_received += 1;
        }
    }

    /// Asks the worker to import `models` again (every synced model when empty). Answers the
    /// models that are not synced.
    pub fn request_import(&self, models: &[String]) -> Result<Vec<String>, Vec<String>> {
        let synced: Vec<String> = self.view.lock().models.keys().cloned().collect();
        let unknown: Vec<String> = models
            .iter()
            .filter(|m| !synced.contains(m))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
        let chosen = if models.is_empty() {
            synced
        } else {
            models.to_vec()
        };
        self.import_requests.lock().extend(chosen.iter().cloned());
        self.wake.notify_one();
        Ok(chosen)
    }

    fn set_connection(&self, connection: Connection, error: Option<String>) {
        let mut view = self.view.lock();
        view.connection = connection;
        view.error = error;
    }

    /// Shows `state` as the model's, keeping the newest webhook time of the two in both.
    fn show_state(&self, model: &str, state: &mut ModelState) {
        if let Some(status) = self.view.lock().models.get_mut(model) {
            let live = status.state.last_webhook_at.take();
            state.last_webhook_at = state.last_webhook_at.take().max(live);
            status.state = state.clone();
        }
    }

    fn set_model(&self, model: &str, update: impl FnOnce(&mut ModelStatus)) {
        if let Some(status) = self.view.lock().models.get_mut(model) {
            update(status);
        }
    }
}

/// Longest pause between attempts while Odoo fails.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Worker {
    pub source: Source,
    pub config: OdooConfig,
    pub status: Arc<Status>,
}

impl Worker {
    /// Runs until `stopped` is set.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let failure = tokio::select! {
                failure = self.connected(&mut backoff) => failure,
                () = crate::util::stopped(&mut stopped) => return,
            };
            let pause = jitter(backoff);
            tracing::warn!(error = %failure, retry_in_secs = pause.as_secs(), "reading Odoo failed");
            self.status
                .set_connection(Connection::Failing, Some(failure.to_string()));
            *self.status.retry_at.lock() = Some(Instant::now() + pause);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.status.wake.notified() => {}
                () = crate::util::stopped(&mut stopped) => return,
            }
            *self.status.retry_at.lock() = None;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Logs in, imports, then sweeps and checks ids until something fails.
    async fn connected(&self, backoff: &mut Duration) -> SyncError {
        self.status.set_connection(Connection::Connecting, None);
        if let Err(e) = self.source.client.authenticate().await {
            return e.into();
        }
        let mut states = match state::load(self.source.store.as_ref()).await {
            Ok(states) => states,
            Err(e) => return e.into(),
        };
        self.status.set_connection(Connection::Connected, None);
        let overlap = chrono::Duration::from_std(self.config.sweep_overlap.duration())
            .unwrap_or_else(|_| chrono::Duration::seconds(300));
        let mut next_ids_check = Instant::now();
        let mut unlinks_after =
            match super::unlinks::checked_through(self.source.store.as_ref()).await {
                Ok(after) => after.unwrap_or(0),
                Err(e) => return e,
            };
        let grace = self.config.deletion_check_grace.duration();
        loop {
            let requested: Vec<String> = std::mem::take(&mut *self.status.import_requests.lock())
                .into_iter()
                .collect();
            for model in requested {
                if let Some(state) = states.get_mut(&model) {
                    state.import_started_at = None;
                    state.import_finished_at = None;
                }
            }
            for (name, settings) in &self.config.models {
                let model = Model { name, settings };
                let state = states.entry(name.clone()).or_default();
                let result = self.import_and_sweep(&model, overlap, state).await;
                self.status.show_state(name, state);
                self.status.set_model(name, |s| s.phase = "idle");
                if let Some(e) = self.settle(name, result) {
                    return e;
                }
            }
            let models: Vec<Model<'_>> = self
                .config
                .models
                .iter()
                .map(|(name, settings)| Model { name, settings })
                .collect();
            match super::unlinks::verify(&self.source, &models, grace, unlinks_after).await {
                Ok((through, _)) => unlinks_after = through,
                Err(e) if is_connection_failure(&e) => return e,
                Err(e) => {
                    tracing::warn!(error = %e, "checking deletions with Odoo failed; will retry")
                }
            }
            let ids_every = self.config.deletion_check_interval.duration();
            if !ids_every.is_zero() && Instant::now() >= next_ids_check {
                for model in models.iter().filter(|m| m.settings.track_deletions) {
                    let name = model.name;
                    let state = states.entry(name.to_string()).or_default();
                    // The import brings what the log has never seen; until it finished, the
                    // check would take every record for one the log lost.
                    if !state.imported() {
                        continue;
                    }
                    self.status.set_model(name, |s| s.phase = "checking_ids");
                    let result = ids::run(&self.source, model, grace, state).await;
                    self.status.show_state(name, state);
                    self.status.set_model(name, |s| s.phase = "idle");
                    // A check that went through does not clear a failing import's error.
                    let result = result.map(|_| ());
                    if result.is_err()
                        && let Some(e) = self.settle(name, result)
                    {
                        return e;
                    }
                }
                next_ids_check = Instant::now() + ids_every;
            }
            // A full round went through: the next failure starts with a short pause.
            *backoff = Duration::from_secs(1);
            self.status.set_connection(Connection::Connected, None);
            tokio::select! {
                () = tokio::time::sleep(self.config.sweep_interval.duration()) => {}
                () = self.status.wake.notified() => {}
            }
        }
    }

    /// The model's import when it has not finished (or its fields changed), then its sweep.
    async fn import_and_sweep(
        &self,
        model: &Model<'_>,
        overlap: chrono::Duration,
        state: &mut ModelState,
    ) -> Result<(), SyncError> {
        let name = model.name;
        if state.imported() && state.fields != model.settings.read_fields() {
            tracing::info!(
                model = name,
                "the fields carried changed: importing the model again"
            );
            state.import_started_at = None;
            state.import_finished_at = None;
        }
        self.status.show_state(name, state);
        if !state.imported() {
            self.status.set_model(name, |s| s.phase = "importing");
            let status = self.status.clone();
            import::run(&self.source, model, overlap, state, |p: Progress| {
                status.set_model(name, |s| {
                    s.import = Some(ImportProgress {
                        read: p.read,
                        stored: p.stored,
                        total: p.total,
                    });
                });
            })
            .await?;
            self.status.show_state(name, state);
            self.status.set_model(name, |s| s.import = None);
        }
        self.status.set_model(name, |s| s.phase = "sweeping");
        sweep::run(&self.source, model, overlap, state).await?;
        Ok(())
    }

    /// Shows how a model's step went. A failure of the connection (Odoo unreachable, the
    /// login refused, the log failing) ends the round: it is returned. Any other failure (a
    /// field Odoo does not know, an access right missing) concerns this model only: it is
    /// shown with the model, and the other models go on.
    fn settle(&self, model: &str, result: Result<(), SyncError>) -> Option<SyncError> {
        match result {
            Ok(()) => {
                self.status.set_model(model, |s| s.error = None);
                None
            }
            Err(e) if is_connection_failure(&e) => Some(in_model(model, e)),
            Err(e) => {
                let e = in_model(model, e);
                tracing::warn!(model, error = %e, "reading the model from Odoo failed; will retry");
                self.status
                    .set_model(model, |s| s.error = Some(e.to_string()));
                None
            }
        }
    }
}

/// Whether the failure is the connection's rather than one model's.
fn is_connection_failure(e: &SyncError) -> bool {
    match e {
        SyncError::Rpc(rpc) => {
            matches!(rpc, RpcError::Unreachable(_) | RpcError::Credentials { .. })
        }
        SyncError::Store(_) | SyncError::Append(_) => true,
    }
}

/// `e`, naming the model it happened on.
fn in_model(model: &str, e: SyncError) -> SyncError {
    match e {
        SyncError::Rpc(RpcError::Odoo { name, message }) => SyncError::Rpc(RpcError::Odoo {
            name,
            message: format!("{message} (reading {model})"),
        }),
        other => other,
    }
}

/// `pause`, give or take a fifth, so that many servers do not retry in step.
fn jitter(pause: Duration) -> Duration {
    use rand::Rng;
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    pause.mul_f64(factor)
}
