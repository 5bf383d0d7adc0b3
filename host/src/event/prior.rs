//! What a record was before a change: worked out when the change is appended, from the
//! record's newest event in the log.
//!
//! The log keeps, with each event, the values before it of the fields it changed
//! ([`Prior::Changed`]). A plugin reads the record's previous version from them (the payload
//! with those values put back), so that it can tell a device that held the record that the
//! record has left its feed. The same comparison gives `changed_fields` to the sources that do
//! not send them (Odoo's webhooks).

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
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
    // The fields whose values differ from the previous event's, when that could be told.
    let mut touched = None;
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
                Some((values, fields)) => {
                    touched = Some(fields);
                    Prior::Changed(values)
                }
                None => Prior::Unknown,
            },
        },
    };
    let changed_fields = match (kind, changed_fields) {
        (_, Some(given)) => Some(given.to_vec()),
        (EventKind::Write, None) => touched,
        _ => None,
    };
    Derived {
        prior,
        changed_fields,
    }
}

/// A JSON object's fields in order, values left as text, keys borrowed where they have no
/// escapes: a payload is split without building a map.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    fn parse(json: &'a str) -> Option<Fields<'a>> {
        serde_json::from_str(json).ok()
    }

    fn get(&self, field: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(key, _)| key == field).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push((key.0, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// An object's key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The values in `before` of the fields whose values differ in `now`, as a JSON object, and
/// those fields; `None` when either is not a JSON object, or when `now` has a field that
/// `before` lacks (a source that sends only what changed, a rule that selects other fields):
/// that field's earlier value is not known, and taking it for unchanged could hide that the
/// record left a feed.
fn changed_values(before: &str, now: &str) -> Option<(String, Vec<String>)> {
    if before == now {
        // A retry, or a write that changed nothing the source sends.
        return Some(("{}".to_string(), Vec::new()));
    }
    let (before, now) = (Fields::parse(before)?, Fields::parse(now)?);
    let mut out = String::from("{");
    let mut changed = Vec::new();
    for (field, value) in &now.0 {
        let old = before.get(field)?;
        if old.get() != value.get() {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(field.as_ref()).ok()?);
            out.push(':');
            out.push_str(old.get());
            changed.push(field.to_string());
        }
    }
    out.push('}');
    Some((out, changed))
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
