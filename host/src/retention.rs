//! Retention: in the background, the log is compacted (the default) or pruned.
//!
//! **Compaction** keeps every record's latest state. A change is folded into the next change of
//! its record ([`crate::event::fold`]) once that next change is older than `compact_after`, and
//! dropped; deletions are kept as tombstones for `tombstone_ttl`, then dropped with what is left
//! of their record. A device is reset (`cursor_too_old`) only when a dropped tombstone lay after
//! its position; a device that was offline for months otherwise just catches up, and one that
//! never pulled reads every record from the start.
//!
//! **Pruning** deletes events by age and count, whatever they are; a device left behind is
//! reset.
//!
//! Both work in small transactions (see [`EventLog::compact_through`] and
//! [`EventLog::prune_through`]), so that ingest and pulls never wait on them for long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::app::App;
use crate::config::{RetentionConfig, RetentionMode, Span};
use crate::log::EventLog;
use crate::store::StoreError;

/// What one round of pruning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Every event with an id up to here may now be gone.
    pub through: i64,
    pub deleted: u64,
}

/// What one round of compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Every event up to here had its record's older changes folded into it.
    pub compacted_through: i64,
    /// Changes folded into a newer one and dropped.
    pub folded: u64,
    /// Events that took in older changes.
    pub rewritten: u64,
    /// Events dropped with a deletion past `tombstone_ttl`, the deletions included.
    pub tombstones_dropped: u64,
}

/// The newest event received longer than `span` ago, looking from `after` on.
async fn older_than(log: &EventLog, after: i64, span: Span) -> Result<i64, StoreError> {
    let Some(cutoff) = chrono::Duration::from_std(span.duration())
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
    else {
        return Ok(after);
    };
    log.received_before(after, &crate::event::rfc3339(cutoff))
        .await
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
    if !config.max_age.is_zero() {
        target = target.max(older_than(log, log.pruned_through(), config.max_age).await?);
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

/// Compacts what `config` lets go, now: folds the changes older than `compact_after`, then
/// drops the tombstones older than `tombstone_ttl`.
pub async fn compact_once(
    log: &EventLog,
    config: &RetentionConfig,
) -> Result<Compaction, StoreError> {
    let through = older_than(log, log.compacted_through(), config.compact_after).await?;
    let step = log.compact_through(through, config.batch_events).await?;
    let tombstones_dropped = if config.tombstone_ttl.is_zero() {
        0
    } else {
        let through =
            older_than(log, log.tombstones_checked_through(), config.tombstone_ttl).await?;
        log.drop_tombstones_through(through, config.batch_events)
            .await?
    };
    Ok(Compaction {
        compacted_through: log.compacted_through(),
        folded: step.dropped,
        rewritten: step.rewritten,
        tombstones_dropped,
    })
}

/// Runs retention every `retention.interval_secs` until `stopped`.
pub async fn run(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    let config = &app.config.retention;
    if !config.runs() {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(config.interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::util::stopped(&mut stopped) => return,
        }
        // Dropped at shutdown, even mid-step: an unfinished step is rolled back.
        let round = async {
            let started = Instant::now();
            match config.mode {
                RetentionMode::Prune => prune_once(&app.log, config).await.map(|pruned| {
                    if pruned.deleted > 0 {
                        tracing::info!(
                            deleted = pruned.deleted,
                            pruned_through = pruned.through,
                            "pruned old events"
                        );
                    }
                }),
                RetentionMode::Compact => compact_once(&app.log, config).await.map(|done| {
                    if done.folded > 0 || done.tombstones_dropped > 0 {
                        tracing::info!(
                            folded = done.folded,
                            rewritten = done.rewritten,
                            tombstones_dropped = done.tombstones_dropped,
                            compacted_through = done.compacted_through,
                            took_ms = started.elapsed().as_millis() as u64,
                            "compacted the event log"
                        );
                    }
                }),
            }
        };
        let result = tokio::select! {
            result = round => result,
            () = crate::util::stopped(&mut stopped) => return,
        };
        match result {
            Ok(()) => {}
            // A full disk is said once, by the store's appends.
            Err(e) if e.is_storage_full() => {
                tracing::debug!(error = %e, "retention: the disk is full; will retry");
            }
            Err(e) => tracing::error!(error = %e, "retention failed; will retry"),
        }
    }
}
