//! Retention: old events are pruned in the background, by age and by count.
//!
//! The pruner works out the newest event that may go, then deletes up to it in small batches
//! (see [`EventLog::prune_through`]), so that ingest and pulls never wait on it for long. A device
//! left behind by pruning is told so on its next pull (`cursor_too_old`), never handed a log with
//! a hole in it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::app::App;
use crate::config::RetentionConfig;
use crate::log::EventLog;
use crate::store::StoreError;

/// What one round of pruning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Every event with an id up to here may now be gone.
    pub through: i64,
    pub deleted: u64,
}

/// The newest event that `config` lets go: whatever is beyond the newest `max_events`, and
/// whatever was received longer than `max_age` ago.
pub async fn prune_target(log: &EventLog, config: &RetentionConfig) -> Result<i64, StoreError> {
    let head = log.head();
    let mut target = log.pruned_through();
    if config.max_events > 0 {
        let keep = i64::try_from(config.max_events).unwrap_or(i64::MAX);
        target = target.max(head.saturating_sub(keep));
    }
    if !config.max_age.is_zero()
        && let Ok(age) = chrono::Duration::from_std(config.max_age.duration())
        && let Some(cutoff) = Utc::now().checked_sub_signed(age)
    {
        let cutoff = crate::event::rfc3339(cutoff);
        target = target.max(log.received_before(&cutoff).await?);
    }
    Ok(target.min(head))
}

/// Prunes what `config` lets go, now.
pub async fn prune_once(log: &EventLog, config: &RetentionConfig) -> Result<Pruned, StoreError> {
    let through = prune_target(log, config).await?;
    let deleted = log.prune_through(through, config.batch_events).await?;
    Ok(Pruned {
        through: log.pruned_through(),
        deleted,
    })
}

/// Prunes every `retention.interval_secs` until `stopped`.
pub async fn run(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let config = &app.config.retention;
    if !config.prunes() {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(config.interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::util::stopped(&mut stopped) => return,
        }
        // Dropped at shutdown, even mid-batch: an unfinished batch is rolled back.
        let pruned = tokio::select! {
            pruned = prune_once(&app.log, config) => pruned,
            () = crate::util::stopped(&mut stopped) => return,
        };
        match pruned {
            Ok(Pruned { deleted: 0, .. }) => {}
            Ok(pruned) => tracing::info!(
                deleted = pruned.deleted,
                pruned_through = pruned.through,
                "pruned old events"
            ),
            // A full disk is said once, by the store's appends.
            Err(e) if e.is_storage_full() => {
                tracing::debug!(error = %e, "pruning old events: the disk is full; will retry");
            }
            Err(e) => tracing::error!(error = %e, "pruning old events failed; will retry"),
        }
    }
}
