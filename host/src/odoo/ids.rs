//! The ids check: the records alive in the log against the ids Odoo has.
//!
//! Deletions made by cascades, by modules writing SQL, or while this server was down leave no
//! webhook. For models with `track_deletions`, the check reads every id Odoo has (`search`,
//! archived records included, in pages of ten times `page_size` ids: one index scan per page
//! for Odoo) and walks the log's records in id order beside them:
//!
//! - alive in the log, not in Odoo: deleted without a trace; an `unlink` is appended;
//! - in Odoo, never seen by the log or deleted in it: read and appended as a `create` (a
//!   deletion whose transaction Odoo rolled back after its webhook was sent, or a record the
//!   log lost). Records never seen are left alone when retention prunes: they may be ones it
//!   pruned.
//!
//! A record whose newest event arrived in the last `grace` (`odoo.deletion_check_grace`) is
//! left to the next check: Odoo sends webhooks before its transaction commits, so a record
//! just created may not be readable yet, and one just deleted may still be.
//!
//! Memory: the ids of one model (8 bytes each), for the length of the check.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::state::{self, ModelState};
use super::{Model, Source, SyncError, version};
use crate::event::{EventKind, NewEvent, now_rfc3339};
use crate::store::RecordHead;

/// Log records read per query.
const LOG_PAGE: usize = 5_000;

/// What one check of one model did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Ids Odoo has.
    pub odoo_ids: u64,
    /// Deletions appended.
    pub deleted: u64,
    /// Records appended that Odoo has and the log did not hold alive.
    pub recovered: u64,
}

pub async fn run(
    source: &Source,
    model: &Model<'_>,
    grace: std::time::Duration,
    state: &mut ModelState,
) -> Result<Checked, SyncError> {
    let odoo_ids = odoo_ids(source, model).await?;
    let settled = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    let is_settled = |head: &RecordHead| {
        DateTime::parse_from_rfc3339(&head.received_at)
            .map(|t| t.with_timezone(&Utc) <= settled)
            .unwrap_or(true)
    };
    let mut gone = Vec::new();
    // In Odoo: never seen by the log, or deleted in it.
    let mut missing = Vec::new();
    let mut back = Vec::new();
    // Walks the log's records and Odoo's ids, both in id order.
    let mut next_odoo = 0;
    let mut after = 0;
    loop {
        let heads = source
            .store
            .record_heads(model.name, after, LOG_PAGE)
            .await?;
        let Some(last) = heads.last() else {
            break;
        };
        after = last.record_id;
        for head in &heads {
            while next_odoo < odoo_ids.len() && odoo_ids[next_odoo] < head.record_id {
                missing.push(odoo_ids[next_odoo]);
                next_odoo += 1;
            }
            let in_odoo = odoo_ids.get(next_odoo) == Some(&head.record_id);
            if in_odoo {
                next_odoo += 1;
            }
            let alive = head.kind != EventKind::Unlink;
            if alive != in_odoo && is_settled(head) {
                if alive {
                    gone.push(head.record_id);
                } else {
                    back.push(head.record_id);
                }
            }
        }
    }
    missing.extend_from_slice(&odoo_ids[next_odoo..]);
    if !source.keeps_every_record {
        missing.clear();
    }

    let mut checked = Checked {
        odoo_ids: odoo_ids.len() as u64,
        ..Checked::default()
    };
    if !gone.is_empty() {
        checked.deleted = append_deletions(source, model, &gone).await?;
    }
    if !missing.is_empty() || !back.is_empty() {
        checked.recovered = append_missing(source, model, &missing, &back).await?;
    }
    state.ids_checked_at = Some(now_rfc3339());
    state.deletions_recovered += checked.deleted;
    state.records_recovered += checked.recovered;
    state::save(source.store.as_ref(), model.name, state).await?;
    if checked.deleted + checked.recovered > 0 {
        tracing::warn!(
            model = model.name,
            deleted = checked.deleted,
            recovered = checked.recovered,
            "the ids check found records the webhooks did not account for"
        );
    }
    Ok(checked)
}

/// Every id of `model` in Odoo, ascending.
async fn odoo_ids(source: &Source, model: &Model<'_>) -> Result<Vec<i64>, SyncError> {
    let page = source.page_size.saturating_mul(10);
    let mut ids: Vec<i64> = Vec::new();
    loop {
        let after = ids.last().copied().unwrap_or(0);
        let found = source
            .client
            .search(model.name, json!([["id", ">", after]]), "id asc", page)
            .await?;
        if found.is_empty() {
            break;
        }
        let mut previous = after;
        for &id in &found {
            if id <= previous {
                return Err(SyncError::Rpc(super::RpcError::Protocol(format!(
                    "{} ids out of order ({id} after {previous})",
                    model.name
                ))));
            }
            previous = id;
        }
        let short = found.len() < page as usize;
        ids.extend(found);
        if short {
            break;
        }
    }
    Ok(ids)
}

/// Appends an `unlink` for each of `ids` that Odoo still does not have when asked once more.
async fn append_deletions(
    source: &Source,
    model: &Model<'_>,
    ids: &[i64],
) -> Result<u64, SyncError> {
    let mut deleted = 0;
    for chunk in ids.chunks(source.page_size as usize) {
        let still_there = source.client.existing(model.name, chunk).await?;
        let now = now_rfc3339();
        let events: Vec<NewEvent> = chunk
            .iter()
            .filter(|id| !still_there.contains(id))
            .map(|&record_id| NewEvent {
                model: model.name.to_string(),
                record_id,
                kind: EventKind::Unlink,
                timestamp: now.clone(),
                payload: None,
                changed_fields: None,
                dedupe_key: None,
                received_at: now.clone(),
            })
            .collect();
        let appended = source.log.append(events).await?;
        deleted += appended.iter().filter(|a| !a.duplicate).count() as u64;
    }
    Ok(deleted)
}

/// Reads `missing` and `back` from Odoo and appends each one Odoo has as a `create`: those the
/// log never saw as the versions they are, those it holds as deleted without a dedupe key (the
/// version may be one the log had before the deletion; Odoo has the record now).
pub(super) async fn append_missing(
    source: &Source,
    model: &Model<'_>,
    missing: &[i64],
    back: &[i64],
) -> Result<u64, SyncError> {
    let fields = model.settings.read_fields();
    let mut recovered = 0;
    for chunk in missing.chunks(source.page_size as usize) {
        let records = source.client.read_ids(model.name, chunk, &fields).await?;
        recovered += super::append::versions(source, model, records)
            .await?
            .stored;
    }
    for chunk in back.chunks(source.page_size as usize) {
        let records = source.client.read_ids(model.name, chunk, &fields).await?;
        let now = now_rfc3339();
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let id = super::append::record_id(model.name, &record)?;
            let mut event = version::event(
                model.name.to_string(),
                id,
                EventKind::Create,
                record,
                now.clone(),
            );
            event.dedupe_key = None;
            events.push(event);
        }
        let appended = source.log.append(events).await?;
        recovered += appended.iter().filter(|a| !a.duplicate).count() as u64;
    }
    Ok(recovered)
}
