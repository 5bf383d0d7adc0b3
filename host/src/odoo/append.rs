//! Appending the records Odoo answered, as versions.

use serde_json::{Map, Value};

use super::{Model, Source, SyncError, version};
use crate::event::{EventKind, now_rfc3339};

/// What appending a page of records did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Records in the page.
    pub read: u64,
    /// Versions the log did not hold, now stored.
    pub stored: u64,
}

/// The record's id, as `read` gives it.
pub fn record_id(model: &str, record: &Map<String, Value>) -> Result<i64, SyncError> {
    record
        .get("id")
        .and_then(Value::as_i64)
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            SyncError::Rpc(super::RpcError::Protocol(format!(
                "a {model} record without an id"
            )))
        })
}

/// The id of the last of `records`, which must be past `after` and in ascending order: pages
/// go by id, and a page that does not move on would be read for ever.
pub fn last_id(
    model: &str,
    after: i64,
    records: &[Map<String, Value>],
) -> Result<Option<i64>, SyncError> {
    let mut previous = after;
    for record in records {
        let id = record_id(model, record)?;
        if id <= previous {
            return Err(SyncError::Rpc(super::RpcError::Protocol(format!(
                "{model} records out of id order ({id} after {previous})"
            ))));
        }
        previous = id;
    }
    Ok((!records.is_empty()).then_some(previous))
}

/// Appends each record of `records` (as `search_read` gave them) as the version it is: a
/// `create` when the log has never seen the record, else a `write`. A version the log already
/// holds is a duplicate and stored no second time ([`crate::event::DedupeKey::Version`]).
pub async fn versions(
    source: &Source,
    model: &Model<'_>,
    records: Vec<Map<String, Value>>,
) -> Result<Appended, SyncError> {
    let ids = records
        .iter()
        .map(|r| record_id(model.name, r))
        .collect::<Result<Vec<_>, _>>()?;
    let seen = source.store.record_heads_of(model.name, &ids).await?;
    let received_at = now_rfc3339();
    let events: Vec<_> = records
        .into_iter()
        .zip(&ids)
        .map(|(record, &id)| {
            let kind = if seen.binary_search_by_key(&id, |h| h.record_id).is_ok() {
                EventKind::Write
            } else {
                EventKind::Create
            };
            version::event(
                model.name.to_string(),
                id,
                kind,
                record,
                received_at.clone(),
            )
        })
        .collect();
    let read = events.len() as u64;
    let appended = source.log.append(events).await?;
    let stored = appended.iter().filter(|a| !a.duplicate).count() as u64;
    Ok(Appended { read, stored })
}
