//! What an Odoo automation rule's "Send Webhook Notification" action posts.
//!
//! Odoo 17 (`odoo/addons/base/models/ir_actions.py`, `_run_action_webhook`) posts, once, with a
//! one-second timeout and no retry, `json.dumps(payload, sort_keys=True, default=str)` of
//! `{"_model", "_id", "_action": "<rule name>(#<id>)"}` and `record.read(fields, load=None)[0]`
//! for the fields the action selected.

use serde_json::{Map, Value};

use super::version;
use crate::event::{EventKind, NewEvent, now_rfc3339};
use crate::ingest::{FieldError, valid_model};

/// Turns the JSON object a webhook posts into an event.
///
/// `kind` comes from the URL's `event=`; without it, a record whose `create_date` equals its
/// `write_date` was just created.
pub fn event(
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
    let kind = kind.unwrap_or_else(|| {
        match (
            body.get("create_date").and_then(Value::as_str),
            body.get("write_date").and_then(Value::as_str),
        ) {
            (Some(created), Some(written)) if created == written => EventKind::Create,
            _ => EventKind::Write,
        }
    });
    Ok(version::event(model, record_id, kind, body, now_rfc3339()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DedupeKey;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn kind_is_inferred_from_the_dates() {
        let body = json!({"_action": "Sync(#12)", "_id": 42, "_model": "sale.order",
            "create_date": "2024-01-15 10:30:00.250000", "id": 42, "name": "S00042",
            "partner_id": 7, "state": "draft", "write_date": "2024-01-15 10:30:00.250000"});
        let event = event(object(body), None).expect("valid");
        assert_eq!(event.kind, EventKind::Create);
        assert_eq!(event.model, "sale.order");
        assert_eq!(event.record_id, 42);
        assert_eq!(event.timestamp, "2024-01-15T10:30:00Z");
        let key = match event.dedupe_key {
            Some(DedupeKey::Version(key)) => key,
            other => panic!("not a version key: {other:?}"),
        };
        assert!(
            key.starts_with("odoo:sale.order:42:version:2024-01-15 10:30:00:"),
            "{key}"
        );
        let payload: Value =
            serde_json::from_str(event.payload.as_deref().expect("payload")).expect("json");
        assert_eq!(payload["partner_id"], 7);
        assert_eq!(payload["write_date"], "2024-01-15 10:30:00");
        assert!(payload.get("_model").is_none());

        let body = json!({"_action": "Sync(#12)", "_id": 42, "_model": "sale.order",
            "create_date": "2024-01-15 10:30:00", "write_date": "2024-01-15 11:00:00"});
        let event = super::event(object(body.clone()), None).expect("valid");
        assert_eq!(event.kind, EventKind::Write);
        let event = super::event(object(body), Some(EventKind::Unlink)).expect("valid");
        assert_eq!(event.kind, EventKind::Unlink);
    }

    #[test]
    fn only_the_same_version_has_the_same_key() {
        let post = |action: &str, fields: Value| {
            let mut body = object(json!({"_action": action, "_id": 42, "_model": "sale.order"}));
            body.extend(object(fields));
            let event = event(body, Some(EventKind::Write)).expect("valid");
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
    fn without_fields_there_is_no_payload_or_key() {
        let body = json!({"_action": "Sync(#12)", "_id": 3, "_model": "res.partner"});
        let event = event(object(body), Some(EventKind::Unlink)).expect("valid");
        assert_eq!(event.payload, None);
        assert_eq!(event.dedupe_key, None);
        assert_eq!(event.kind, EventKind::Unlink);
    }

    #[test]
    fn errors_name_the_field() {
        let err = event(object(json!({"_id": 3})), None).expect_err("no model");
        assert_eq!(err.field, "_model");
        let err =
            event(object(json!({"_model": "res.partner", "_id": "x"})), None).expect_err("bad id");
        assert_eq!(err.field, "_id");
    }
}
