//! One version of one Odoo record, as the log stores it, whichever path brought it.
//!
//! A version reaches the server by two paths that render values differently:
//!
//! | | webhook (`ir_actions.py`, `_run_action_webhook`) | JSON-RPC (`search_read`) |
//! |---|---|---|
//! | datetimes | `str(datetime)`: `2024-01-15 10:30:00.123456` (no fraction when the microseconds are 0) | `2024-01-15 10:30:00` |
//! | many2one | the bare id (`read(load=None)`) | the bare id: the server asks with `load: null` |
//! | the record's id | `_id`, and `id` among the fields | `id` |
//!
//! [`normalize`] brings both to one form (datetimes to the second, as JSON-RPC and Odoo's own
//! clients show them), so that one version has one payload and one dedupe key whichever path
//! brought it first, and a device sees one format.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{DedupeKey, EventKind, NewEvent, normalize_timestamp};

/// Brings a record's fields to the form the log stores: datetimes to the second.
pub fn normalize(fields: &mut Map<String, Value>) {
    for value in fields.values_mut() {
        if let Value::String(text) = value
            && let Some(second) = datetime_to_the_second(text)
        {
            text.truncate(second);
        }
    }
}

/// The length of `text` without its fraction of a second, when `text` is a datetime as
/// Python's `str(datetime)` writes it with one (`2024-01-15 10:30:00.123456`).
fn datetime_to_the_second(text: &str) -> Option<usize> {
    const SECOND: usize = "2024-01-15 10:30:00".len();
    let bytes = text.as_bytes();
    let shape = |i: usize, b: u8| match i {
        4 | 7 => b == b'-',
        10 => b == b' ',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    };
    (bytes.len() > SECOND + 1
        && bytes.len() <= SECOND + 7
        && bytes[..SECOND]
            .iter()
            .enumerate()
            .all(|(i, &b)| shape(i, b))
        && bytes[SECOND] == b'.'
        && bytes[SECOND + 1..].iter().all(u8::is_ascii_digit))
    .then_some(SECOND)
}

/// The event for one version of record `record_id` of `model`: `fields` as Odoo's `read` gives
/// them (with `id` and `write_date` when the rule or the read asked for them), normalised. Its
/// time is the record's `write_date` when there is one, else `received_at`; a version with a
/// `write_date` has a dedupe key ([`dedupe_key`]).
pub fn event(
    model: String,
    record_id: i64,
    kind: EventKind,
    mut fields: Map<String, Value>,
    received_at: String,
) -> NewEvent {
    normalize(&mut fields);
    let write_date = fields
        .get("write_date")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let timestamp = write_date
        .as_deref()
        .and_then(normalize_timestamp)
        .unwrap_or_else(|| received_at.clone());
    // A post with a write_date has at least that field: the payload is there to digest.
    let payload = (!fields.is_empty()).then(|| Value::Object(fields).to_string());
    let dedupe_key = write_date
        .zip(payload.as_deref())
        .map(|(w, fields)| DedupeKey::Version(dedupe_key(&model, record_id, kind, &w, fields)));
    NewEvent {
        model,
        record_id,
        kind,
        timestamp,
        payload,
        changed_fields: None,
        dedupe_key,
        received_at,
    }
}

/// The dedupe key of one version of one Odoo record.
///
/// `write_date` alone does not tell versions apart: it has a one-second resolution here and is
/// the same for every write of one transaction, so two changes of a record within a second
/// share it. The key therefore also holds a digest of every field the version carries. A retry
/// of the same post, or the same version reaching the server again by another path (another
/// rule, the import, the sweep), has the same fields and the same key and is stored once; a
/// second change with the same `write_date` differs in some field and is stored as an event of
/// its own.
///
/// A creation and a change are the same version when their fields are (the sweep cannot tell
/// which one Odoo's webhook would have been); a deletion is not the version it deletes.
/// `fields` is the payload as the log stores it: the record's fields without Odoo's bookkeeping
/// (`_model`, `_id`, `_action`), which is not part of the version, written by serde_json,
/// whose objects keep their keys sorted (the crate's `preserve_order` feature is off), so that
/// the same fields in another order give the same text.
pub fn dedupe_key(
    model: &str,
    record_id: i64,
    kind: EventKind,
    write_date: &str,
    fields: &str,
) -> String {
    let digest = Sha256::digest(fields.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let what = match kind {
        EventKind::Unlink => "unlink",
        EventKind::Create | EventKind::Write => "version",
    };
    format!("odoo:{model}:{record_id}:{what}:{write_date}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn datetimes_lose_their_fraction_and_nothing_else_changes() {
        let mut fields = object(json!({
            "write_date": "2024-01-15 10:30:00.123456",
            "create_date": "2024-01-15 10:30:00.5",
            "date_order": "2024-01-15 10:30:00",
            "date": "2024-01-15",
            "name": "2024-01-15 10:30:00.123456 and more",
            "ref": "1234-56-78 90:12:34.x",
            "note": "2024-01-15T10:30:00.123456",
            "partner_id": 7,
        }));
        normalize(&mut fields);
        assert_eq!(
            Value::Object(fields),
            json!({
                "write_date": "2024-01-15 10:30:00",
                "create_date": "2024-01-15 10:30:00",
                "date_order": "2024-01-15 10:30:00",
                "date": "2024-01-15",
                "name": "2024-01-15 10:30:00.123456 and more",
                "ref": "1234-56-78 90:12:34.x",
                "note": "2024-01-15T10:30:00.123456",
                "partner_id": 7,
            })
        );
    }

    #[test]
    fn one_version_has_one_key_whichever_path_brought_it() {
        let webhook = object(json!({"id": 42, "partner_id": 7, "state": "sale",
            "write_date": "2024-01-15 10:30:00.123456"}));
        let rpc = object(json!({"write_date": "2024-01-15 10:30:00", "state": "sale",
            "partner_id": 7, "id": 42}));
        let at = "2024-01-15T10:31:00Z".to_string();
        let a = event(
            "sale.order".into(),
            42,
            EventKind::Write,
            webhook,
            at.clone(),
        );
        let b = event("sale.order".into(), 42, EventKind::Create, rpc, at.clone());
        assert_eq!(a.dedupe_key, b.dedupe_key);
        assert_eq!(a.payload, b.payload);
        assert_eq!(a.timestamp, "2024-01-15T10:30:00Z");
        assert_eq!(a.timestamp, b.timestamp);
        let deleted = object(json!({"id": 42, "partner_id": 7, "state": "sale",
            "write_date": "2024-01-15 10:30:00"}));
        let c = event("sale.order".into(), 42, EventKind::Unlink, deleted, at);
        assert_ne!(a.dedupe_key, c.dedupe_key);
    }
}
