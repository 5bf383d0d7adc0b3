//! Turning what arrives (the ingest API's items, Odoo's webhook posts) into validated events.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{DedupeKey, EventKind, NewEvent, normalize_timestamp, now_rfc3339};

/// Longest model name, dedupe key and field name accepted.
const MAX_NAME_LEN: usize = 128;
const MAX_KEY_LEN: usize = 512;

/// A bad value, named by its path in the request (`events[3].record_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Whether `name` looks like an Odoo model name (`sale.order`, `x_custom.thing`).
pub fn valid_model(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        && !name.starts_with('.')
        && !name.ends_with('.')
}

/// One item of `POST /api/v2/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestItem {
    pub model: String,
    pub record_id: i64,
    pub event: EventKind,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    #[serde(default)]
    pub changed_fields: Option<Vec<String>>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    pub events: Vec<IngestItem>,
}

impl IngestItem {
    /// Validates the item, `index` naming it in errors.
    pub fn into_event(self, index: usize, received_at: &str) -> Result<NewEvent, FieldError> {
        let at = |field: &str| format!("events[{index}].{field}");
        if !valid_model(&self.model) {
            return Err(FieldError::new(
                at("model"),
                format!("{:?} is not an Odoo model name", self.model),
            ));
        }
        if self.record_id < 1 {
            return Err(FieldError::new(
                at("record_id"),
                "must be a positive integer",
            ));
        }
        let timestamp = match &self.timestamp {
            None => received_at.to_string(),
            Some(t) => normalize_timestamp(t).ok_or_else(|| {
                FieldError::new(
                    at("timestamp"),
                    format!("{t:?} is not an RFC 3339 time (2024-01-15T10:30:00Z)"),
                )
            })?,
        };
        if let Some(fields) = &self.changed_fields
            && let Some(bad) = fields
                .iter()
                .find(|f| f.is_empty() || f.len() > MAX_NAME_LEN)
        {
            return Err(FieldError::new(
                at("changed_fields"),
                format!("{bad:?} is not a field name"),
            ));
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.len() > MAX_KEY_LEN)
        {
            return Err(FieldError::new(
                at("key"),
                format!("must be 1 to {MAX_KEY_LEN} characters"),
            ));
        }
        Ok(NewEvent {
            model: self.model,
            record_id: self.record_id,
            kind: self.event,
            timestamp,
            payload: self.payload.map(|p| Value::Object(p).to_string()),
            changed_fields: self.changed_fields,
            dedupe_key: self.key.map(DedupeKey::Event),
            received_at: received_at.to_string(),
        })
    }
}

/// Turns the JSON object Odoo's "Send Webhook Notification" action posts into an event.
///
/// Odoo sends `_model`, `_id`, `_action` and the fields the rule selected, as
/// `record.read(fields, load=None)` gives them. `kind` comes from the URL's `event=`; without
/// it, a record whose `create_date` equals its `write_date` was just created.
pub fn odoo_webhook_event(
    mut body: Map<String, Value>,
    kind: Option<EventKind>,
) -> Result<NewEvent, FieldError> {
    let model = match body.remove("_model") {
        Some(Value::String(model)) if valid_model(&model) => model,
        Some(other) => {
            return Err(FieldError::new(
                "_model",
                format!("{other} is not an Odoo model name"),
            ));
        }
        None => {
            return Err(FieldError::new(
                "_model",
                "missing: is this an Odoo \"Send Webhook Notification\" action?",
            ));
        }
    };
    let record_id = match body.remove("_id") {
        Some(Value::Number(n)) => n.as_i64().filter(|id| *id > 0),
        _ => None,
    }
    .ok_or_else(|| FieldError::new("_id", "must be a positive integer"))?;
    body.remove("_action");
    // Any other `_` key is Odoo's bookkeeping, not a field of the record.
    body.retain(|key, _| !key.starts_with('_'));

    let write_date = body.get("write_date").and_then(Value::as_str);
    let kind = kind.unwrap_or_else(|| {
        match (body.get("create_date").and_then(Value::as_str), write_date) {
            (Some(created), Some(written)) if created == written => EventKind::Create,
            _ => EventKind::Write,
        }
    });
    let received_at = now_rfc3339();
    let timestamp = write_date
        .and_then(normalize_timestamp)
        .unwrap_or_else(|| received_at.clone());
    let write_date = write_date.map(str::to_owned);
    // A post with a write_date has at least that field: the payload is there to digest.
    let payload = (!body.is_empty()).then(|| Value::Object(body).to_string());
    let dedupe_key = write_date.zip(payload.as_deref()).map(|(w, fields)| {
        DedupeKey::Version(odoo_dedupe_key(&model, record_id, kind, &w, fields))
    });
    Ok(NewEvent {
        model,
        record_id,
        kind,
        timestamp,
        payload,
        changed_fields: None,
        dedupe_key,
        received_at,
    })
}

/// The dedupe key of one version of one Odoo record, as a webhook post carries it.
///
/// `write_date` alone does not tell versions apart: it has a one-second resolution and is the
/// same for every write of one transaction, so two changes of a record within a second share
/// it. The key therefore also holds a digest of every field the post carries. A retry of the
/// same post, or the same version reaching the server again by another path (another rule, the
/// keys in another order), has the same fields and the same key and is stored once; a second
/// change with the same `write_date` differs in some field and is stored as an event of its own.
/// `fields` is the payload as the log stores it: the record's fields without Odoo's bookkeeping
/// (`_model`, `_id`, `_action`), which is not part of the version, written by serde_json, whose
/// objects keep their keys sorted (the crate's `preserve_order` feature is off), so that the same
/// fields in another order give the same text.
pub fn odoo_dedupe_key(
    model: &str,
    record_id: i64,
    kind: EventKind,
    write_date: &str,
    fields: &str,
) -> String {
    let digest = Sha256::digest(fields.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("odoo:{model}:{record_id}:{kind}:{write_date}:{hex}")
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
    fn model_names() {
        for good in [
            "sale.order",
            "res.partner",
            "x_studio.thing_2",
            "account.move.line",
        ] {
            assert!(valid_model(good), "{good}");
        }
        for bad in [
            "",
            "Sale.Order",
            "sale order",
            ".sale",
            "sale.",
            "sale;drop",
        ] {
            assert!(!valid_model(bad), "{bad}");
        }
    }

    #[test]
    fn webhook_kind_is_inferred_from_the_dates() {
        let body = json!({"_action": "Sync(#12)", "_id": 42, "_model": "sale.order",
            "create_date": "2024-01-15 10:30:00", "id": 42, "name": "S00042",
            "partner_id": 7, "state": "draft", "write_date": "2024-01-15 10:30:00"});
        let event = odoo_webhook_event(object(body), None).expect("valid");
        assert_eq!(event.kind, EventKind::Create);
        assert_eq!(event.model, "sale.order");
        assert_eq!(event.record_id, 42);
        assert_eq!(event.timestamp, "2024-01-15T10:30:00Z");
        let key = match event.dedupe_key {
            Some(DedupeKey::Version(key)) => key,
            other => panic!("not a version key: {other:?}"),
        };
        assert!(
            key.starts_with("odoo:sale.order:42:create:2024-01-15 10:30:00:"),
            "{key}"
        );
        let payload: Value =
            serde_json::from_str(event.payload.as_deref().expect("payload")).expect("json");
        assert_eq!(payload["partner_id"], 7);
        assert!(payload.get("_model").is_none());

        let body = json!({"_action": "Sync(#12)", "_id": 42, "_model": "sale.order",
            "create_date": "2024-01-15 10:30:00", "write_date": "2024-01-15 11:00:00"});
        let event = odoo_webhook_event(object(body.clone()), None).expect("valid");
        assert_eq!(event.kind, EventKind::Write);
        let event = odoo_webhook_event(object(body), Some(EventKind::Unlink)).expect("valid");
        assert_eq!(event.kind, EventKind::Unlink);
    }

    #[test]
    fn only_the_same_version_has_the_same_key() {
        let post = |action: &str, fields: Value| {
            let mut body = object(json!({"_action": action, "_id": 42, "_model": "sale.order"}));
            body.extend(object(fields));
            let event = odoo_webhook_event(body, Some(EventKind::Write)).expect("valid");
            event.dedupe_key.expect("a key").as_str().to_string()
        };
        let draft = json!({"id": 42, "state": "draft", "user_id": [5, "Mitchell"],
                           "write_date": "2024-01-15 10:30:00", "tags": {"b": 1, "a": [1, 2]}});
        let first = post("Sync(#12)", draft.clone());
        // A retry of the same post, or the same version through another rule with its fields in
        // another order, is the same version.
        assert_eq!(post("Sync(#12)", draft), first);
        let reordered = json!({"write_date": "2024-01-15 10:30:00", "tags": {"a": [1, 2], "b": 1},
                               "user_id": [5, "Mitchell"], "state": "draft", "id": 42});
        assert_eq!(post("Other rule(#13)", reordered), first);
        // A second change within the same second is another version.
        let confirmed = json!({"id": 42, "state": "sale", "user_id": [5, "Mitchell"],
                               "write_date": "2024-01-15 10:30:00", "tags": {"b": 1, "a": [1, 2]}});
        assert_ne!(post("Sync(#12)", confirmed), first);
        let nested = json!({"id": 42, "state": "draft", "user_id": [5, "Mitchell"],
                            "write_date": "2024-01-15 10:30:00", "tags": {"b": 1, "a": [2, 1]}});
        assert_ne!(post("Sync(#12)", nested), first);
    }

    #[test]
    fn webhook_without_fields_has_no_payload_or_key() {
        let body = json!({"_action": "Sync(#12)", "_id": 3, "_model": "res.partner"});
        let event = odoo_webhook_event(object(body), Some(EventKind::Unlink)).expect("valid");
        assert_eq!(event.payload, None);
        assert_eq!(event.dedupe_key, None);
        assert_eq!(event.kind, EventKind::Unlink);
    }

    #[test]
    fn webhook_errors_name_the_field() {
        let err = odoo_webhook_event(object(json!({"_id": 3})), None).expect_err("no model");
        assert_eq!(err.field, "_model");
        let err = odoo_webhook_event(object(json!({"_model": "res.partner", "_id": "x"})), None)
            .expect_err("bad id");
        assert_eq!(err.field, "_id");
    }
}
