//! Turning the ingest API's items into validated events (Odoo's webhook posts: [`crate::odoo::webhook`]).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::{DedupeKey, EventKind, NewEvent, normalize_timestamp};

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
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
