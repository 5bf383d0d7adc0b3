//! What a record was before a change: worked out when the change is appended, from the
//! record's newest event in the log.
//!
//! The log keeps, with each event, the values before it of the fields it changed
//! ([`Prior::Changed`]). A plugin reads the record's previous version from them (the payload
//! with those values put back), so that it can tell a device that held the record that the
//! record has left its feed. The same comparison gives `changed_fields` to the sources that do
//! not send them (Odoo's webhooks).

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::{EventKind, Prior};

/// What the log derived for a change when it appended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub prior: Prior,
    /// The fields whose values changed, for a write whose source did not say.
    pub changed_fields: Option<Vec<String>>,
}

/// The record's newest event before a change, as far as the prior goes.
pub struct Previous<'a> {
    pub kind: EventKind,
    pub payload: Option<&'a str>,
}

/// What the log derives for a change of `kind` with `payload` (and `changed_fields` as its
/// source sent them) when the record's newest event is `previous`.
pub fn derive(
    previous: Option<Previous<'_>>,
    kind: EventKind,
    payload: Option<&str>,
    changed_fields: Option<&[String]>,
) -> Derived {
    let prior = match previous {
        // A create of a record the log never saw: a new record. Any other change: the record
        // predates the log, or its history was pruned.
        None if kind == EventKind::Create => Prior::None,
        None => Prior::Unknown,
        // After its deletion, the record came back.
        Some(Previous {
            kind: EventKind::Unlink,
            ..
        }) => Prior::None,
        Some(Previous { payload: None, .. }) => Prior::Unknown,
        Some(Previous {
            payload: Some(before),
            ..
        }) => match payload {
            // Nothing of the record now: everything it was is its previous version.
            None => Prior::Changed(before.to_string()),
            Some(now) => match changed_values(before, now) {
                Some(changed) => Prior::Changed(changed),
                None => Prior::Unknown,
            },
        },
    };
    let changed_fields = match (&prior, kind, changed_fields) {
        (_, _, Some(given)) => Some(given.to_vec()),
        (Prior::Changed(values), EventKind::Write, None) if payload.is_some() => fields_of(values),
        _ => None,
    };
    Derived {
        prior,
        changed_fields,
    }
}

fn fields(json: &str) -> Option<BTreeMap<String, &RawValue>> {
    serde_json::from_str(json).ok()
}

/// The values in `before` of the fields whose values differ in `now`, as a JSON object;
/// `None` when either is not a JSON object, or when `now` has a field that `before` lacks
/// (a source that sends only what changed, a rule that selects other fields): that field's
/// earlier value is not known, and taking it for unchanged could hide that the record left a
/// feed.
fn changed_values(before: &str, now: &str) -> Option<String> {
    let (before, now) = (fields(before)?, fields(now)?);
    let mut out = String::from("{");
    for (field, value) in &now {
        let old = before.get(field)?;
        if old.get() != value.get() {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(field).ok()?);
            out.push(':');
            out.push_str(old.get());
        }
    }
    out.push('}');
    Some(out)
}

fn fields_of(object: &str) -> Option<Vec<String>> {
    Some(fields(object)?.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use EventKind::{Create, Unlink, Write};

    fn written(before: &Value) -> Previous<'static> {
        Previous {
            kind: Write,
            payload: Some(Box::leak(before.to_string().into_boxed_str())),
        }
    }

    fn values(prior: &Prior) -> Value {
        match prior {
            Prior::Changed(json) => serde_json::from_str(json).expect("JSON"),
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn a_field_the_previous_event_did_not_have_makes_the_prior_unknown() {
        // Only what changed: the salesperson's earlier value is not in the previous event.
        let before = json!({"state": "sale"});
        let now = json!({"user_id": 7});
        let derived = derive(Some(written(&before)), Write, Some(&now.to_string()), None);
        assert_eq!(derived.prior, Prior::Unknown);
        assert_eq!(derived.changed_fields, None);
    }

    #[test]
    fn a_write_knows_the_earlier_values_of_what_it_changed() {
        let before = json!({"id": 7, "user_id": 5, "state": "draft", "note": false, "x": 0});
        let now = json!({"id": 7, "user_id": 6, "state": "draft", "note": "hi", "x": 0});
        let derived = derive(Some(written(&before)), Write, Some(&now.to_string()), None);
        assert_eq!(values(&derived.prior), json!({"user_id": 5, "note": false}));
        assert_eq!(
            derived.changed_fields,
            Some(vec!["note".to_string(), "user_id".to_string()])
        );
        // A source that says what changed is taken at its word.
        let given = ["state".to_string()];
        let derived = derive(
            Some(written(&before)),
            Write,
            Some(&now.to_string()),
            Some(&given),
        );
        assert_eq!(derived.changed_fields, Some(vec!["state".to_string()]));
    }

    #[test]
    fn new_records_have_no_prior_and_records_without_history_an_unknown_one() {
        let payload = json!({"id": 1}).to_string();
        assert_eq!(
            derive(None, Create, Some(&payload), None).prior,
            Prior::None
        );
        assert_eq!(
            derive(None, Write, Some(&payload), None).prior,
            Prior::Unknown
        );
        assert_eq!(derive(None, Unlink, None, None).prior, Prior::Unknown);
        let deleted = Previous {
            kind: Unlink,
            payload: Some("{\"id\":1}"),
        };
        assert_eq!(
            derive(Some(deleted), Create, Some(&payload), None).prior,
            Prior::None
        );
        let bare = Previous {
            kind: Write,
            payload: None,
        };
        let derived = derive(Some(bare), Write, Some(&payload), None);
        assert_eq!(derived.prior, Prior::Unknown);
        assert_eq!(derived.changed_fields, None);
    }

    #[test]
    fn a_change_without_payload_keeps_the_whole_previous_version() {
        let before = json!({"id": 7, "user_id": 5});
        let derived = derive(Some(written(&before)), Unlink, None, None);
        assert_eq!(values(&derived.prior), before);
        assert_eq!(derived.changed_fields, None);
    }

    #[test]
    fn payloads_that_are_not_objects_make_the_prior_unknown() {
        let derived = derive(Some(written(&json!([1]))), Write, Some("{}"), None);
        assert_eq!(derived.prior, Prior::Unknown);
    }
}
