//! Deletions Odoo announced but did not make.
//!
//! Odoo runs "on deletion" rules before it deletes, and its checks after: deleting a confirmed
//! sales order posts the webhook, then fails ("cannot delete a sent quotation"), and the
//! transaction rolls back. The log then holds a deletion of a record Odoo still has, and no
//! later version is newer than it. So once a deletion is older than `deletion_check_grace`
//! (longer than an Odoo transaction), Odoo is asked whether the record is really gone; a record
//! it still has is read and appended again (a `create`), and devices get it back.
//!
//! How far the check got is kept in the store (`odoo-unlinks`): after a restart it goes on
//! from there, so no deletion is left unchecked.

use chrono::Utc;

use super::{Model, Source, SyncError, ids};
use crate::event::EventKind;
use crate::store::EventStore;

const SOURCE: &str = "odoo-unlinks";

/// Events read per query.
const PAGE: usize = 5_000;

/// How far the check got: every deletion up to this event id was checked.
pub async fn checked_through(store: &dyn EventStore) -> Result<Option<i64>, SyncError> {
    for (name, state) in store.sources().await? {
        if name == SOURCE {
            return Ok(state.trim().parse().ok());
        }
    }
    Ok(None)
}

/// Checks the deletions of `models` received after event `after` and longer than `grace`
/// ago; answers how far it got and how many records came back.
pub async fn verify(
    source: &Source,
    models: &[Model<'_>],
    grace: std::time::Duration,
    after: i64,
) -> Result<(i64, u64), SyncError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let through = source
        .log
        .received_before(after, &crate::event::rfc3339(cutoff))
        .await?;
    let names: Vec<String> = models.iter().map(|m| m.name.to_string()).collect();
    let mut deleted: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    let mut at = after;
    while at < through {
        let events = source
            .store
            .read_after(at, through, Some(&names), PAGE)
            .await?;
        let Some(last) = events.last() else {
            break;
        };
        at = last.id;
        for event in events.iter().filter(|e| e.kind == EventKind::Unlink) {
            if let Some(model) = models.iter().find(|m| m.name == event.model) {
                deleted.entry(model.name).or_default().push(event.record_id);
            }
        }
    }
    let mut restored = 0;
    for model in models {
        let Some(ids) = deleted.get_mut(model.name) else {
            continue;
        };
        ids.sort_unstable();
        ids.dedup();
        // Only records whose deletion is still their newest event.
        let heads = source.store.record_heads_of(model.name, ids).await?;
        let still_deleted: Vec<i64> = heads
            .iter()
            .filter(|h| h.kind == EventKind::Unlink)
            .map(|h| h.record_id)
            .collect();
        for chunk in still_deleted.chunks(source.page_size as usize) {
            let present = source.client.existing(model.name, chunk).await?;
            if !present.is_empty() {
                restored += ids::append_missing(source, model, &[], &present).await?;
            }
        }
    }
    source
        .store
        .save_source(SOURCE, &through.to_string())
        .await?;
    if restored > 0 {
        tracing::warn!(
            restored,
            "deletions Odoo announced but rolled back: the records were sent again"
        );
    }
    Ok((through, restored))
}
