//! Folding a record's history into one event: what compaction keeps of the changes it drops.
//!
//! A device applies `create` and `write` as "store this record" and `unlink` as "delete it".
//! Whatever part of a record's history it read, the folded event brings it to the record's
//! latest state:
//!
//! | the record's changes, oldest first | the folded event |
//! |---|---|
//! | `create`, then `write`s | `create`, with the merged payload |
//! | `write`s | `write`, with the merged payload and the union of `changed_fields` (none when one is unknown) |
//! | anything, then `unlink` | `unlink`, with the merged payload (the record's last known values) |
//! | `unlink`, then `create` or `write` | the later change as it is: the record came back |
//!
//! Unlike an answer's coalescing, `create` ... `unlink` is not nothing: a device that read the
//! `create` must still be told of the deletion, so the `unlink` stays (a tombstone).
//!
//! Payloads merge field by field, newer values winning: a source that sends only the fields
//! that changed ends with the whole record, and for Odoo's full payloads the merge is simply
//! the latest one. The folded event keeps the newest change's id and times.

use serde_json::{Map, Value};

use super::{Event, EventKind, Folded, Prior};

/// `history` (one record's events, oldest first) as one event; `None` when it is empty.
pub fn fold(history: &[Event]) -> Option<Event> {
    let (first, rest) = history.split_first()?;
    let mut folded = first.clone();
    for newer in rest {
        folded = fold_pair(folded, newer);
    }
    Some(folded)
}

fn fold_pair(older: Event, newer: &Event) -> Event {
    let mut out = newer.clone();
    // A device positioned at or after the oldest folded change may have read part of the
    // history; the store says when the fold happened (`Folded::at`).
    out.folded = Some(Folded {
        from: older.folded.map_or(older.id, |f| f.from),
        at: older.folded.map_or(0, |f| f.at),
    });
    let came_back = older.kind == EventKind::Unlink;
    let before_all = older.prior.clone();
    match (older.kind, newer.kind) {
        // The record was deleted, and came back: nothing before the deletion carries over.
        (EventKind::Unlink, _) => {}
        (_, EventKind::Unlink) => {
            out.payload = merge(older.payload, newer.payload.as_deref());
        }
        (EventKind::Create, _) | (_, EventKind::Create) => {
            out.kind = EventKind::Create;
            out.payload = merge(older.payload, newer.payload.as_deref());
            // A created record is sent whole.
            out.changed_fields = None;
        }
        (EventKind::Write, EventKind::Write) => {
            out.payload = merge(older.payload, newer.payload.as_deref());
            out.changed_fields = union(older.changed_fields, newer.changed_fields.as_deref());
        }
    }
    out.prior = prior_before_both(before_all, came_back, &newer.prior, out.payload.as_deref());
    out
}

/// What the record was before two folded changes, given what it was before the first
/// (`first`), whether the first was its deletion, what it was before the second (`second`),
/// and its values after both (`payload`).
fn prior_before_both(
    first: Prior,
    came_back: bool,
    second: &Prior,
    payload: Option<&str>,
) -> Prior {
    match (first, second) {
        (Prior::None, _) => Prior::None,
        // Across a deletion the record's earlier values are not told apart from its new ones.
        (_, _) if came_back => Prior::Unknown,
        (Prior::Changed(first), Prior::Changed(second)) => {
            changed_before_both(&first, second, payload).map_or(Prior::Unknown, Prior::Changed)
        }
        _ => Prior::Unknown,
    }
}

/// The earlier values of both changes (the first change's win: they are older), less those
/// that are what `payload` says now (a field changed and changed back).
fn changed_before_both(first: &str, second: &str, payload: Option<&str>) -> Option<String> {
    let mut values = serde_json::from_str::<Map<String, Value>>(first).ok()?;
    for (field, value) in serde_json::from_str::<Map<String, Value>>(second).ok()? {
        values.entry(field).or_insert(value);
    }
    if let Some(now) = payload.and_then(|p| serde_json::from_str::<Map<String, Value>>(p).ok()) {
        values.retain(|field, value| now.get(field) != Some(value));
    }
    Some(Value::Object(values).to_string())
}

/// `newer`'s fields over `older`'s. Either may be missing; a payload that does not read as a
/// JSON object is replaced whole by the other.
fn merge(older: Option<String>, newer: Option<&str>) -> Option<String> {
    let Some(newer) = newer else {
        return older;
    };
    let Some(older) = older else {
        return Some(newer.to_string());
    };
    let (Ok(mut base), Ok(over)) = (
        serde_json::from_str::<Map<String, Value>>(&older),
        serde_json::from_str::<Map<String, Value>>(newer),
    ) else {
        return Some(newer.to_string());
    };
    // Odoo sends every field each time: then the newer payload is the merge, as it was sent.
    if base.keys().all(|key| over.contains_key(key)) {
        return Some(newer.to_string());
    }
    base.extend(over);
    Some(Value::Object(base).to_string())
}

fn union(older: Option<Vec<String>>, newer: Option<&[String]>) -> Option<Vec<String>> {
    let mut union = older?;
    for field in newer? {
        if !union.contains(field) {
            union.push(field.clone());
        }
    }
    Some(union)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use EventKind::{Create, Unlink, Write};

    fn change(id: i64, kind: EventKind, payload: Option<Value>, fields: Option<&[&str]>) -> Event {
        Event {
            id,
            model: "sale.order".into(),
            record_id: 7,
            kind,
            timestamp: format!("2024-01-15T10:00:{id:02}Z"),
            payload: payload.map(|p| p.to_string()),
            changed_fields: fields.map(|f| f.iter().map(|s| s.to_string()).collect()),
            received_at: format!("2024-01-15T10:00:{id:02}.5Z"),
            rev: 0,
            prior: crate::event::Prior::Unknown,
            folded: None,
        }
    }

    fn payload(event: &Event) -> Value {
        event
            .payload
            .as_deref()
            .map_or(Value::Null, |p| serde_json::from_str(p).expect("JSON"))
    }

    #[test]
    fn create_then_writes_is_a_create_with_every_field_newest_first() {
        let folded = fold(&[
            change(
                1,
                Create,
                Some(json!({"name": "S1", "state": "draft"})),
                None,
            ),
            change(2, Write, Some(json!({"state": "sale"})), Some(&["state"])),
            change(3, Write, None, Some(&["note"])),
            change(4, Write, Some(json!({"note": "hi"})), Some(&["note"])),
        ])
        .expect("folded");
        assert_eq!(folded.id, 4);
        assert_eq!(folded.kind, Create);
        assert_eq!(folded.timestamp, "2024-01-15T10:00:04Z");
        assert_eq!(folded.received_at, "2024-01-15T10:00:04.5Z");
        assert_eq!(folded.changed_fields, None);
        assert_eq!(
            payload(&folded),
            json!({"name": "S1", "state": "sale", "note": "hi"})
        );
    }

    #[test]
    fn writes_are_a_write_with_the_union_of_changed_fields() {
        let folded = fold(&[
            change(1, Write, Some(json!({"a": 1})), Some(&["a"])),
            change(2, Write, Some(json!({"b": 2})), Some(&["b", "a"])),
        ])
        .expect("folded");
        assert_eq!(folded.kind, Write);
        assert_eq!(
            folded.changed_fields,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(payload(&folded), json!({"a": 1, "b": 2}));
        let unknown = fold(&[
            change(1, Write, None, Some(&["a"])),
            change(2, Write, None, None),
        ])
        .expect("folded");
        assert_eq!(unknown.changed_fields, None);
    }

    #[test]
    fn full_payloads_fold_to_the_newest_as_it_was_sent() {
        let newest = r#"{"state":"sale","name":"S1"}"#;
        let mut last = change(2, Write, None, None);
        last.payload = Some(newest.into());
        let folded = fold(&[
            change(
                1,
                Create,
                Some(json!({"name": "S0", "state": "draft"})),
                None,
            ),
            last,
        ])
        .expect("folded");
        assert_eq!(folded.payload.as_deref(), Some(newest));
    }

    #[test]
    fn a_deletion_stays_and_keeps_the_last_known_values() {
        let folded = fold(&[
            change(
                1,
                Create,
                Some(json!({"user_id": 5, "state": "draft"})),
                None,
            ),
            change(2, Write, Some(json!({"state": "sale"})), Some(&["state"])),
            change(3, Unlink, None, None),
        ])
        .expect("folded");
        assert_eq!((folded.id, folded.kind), (3, Unlink));
        assert_eq!(payload(&folded), json!({"user_id": 5, "state": "sale"}));
    }

    #[test]
    fn a_record_that_came_back_starts_afresh() {
        let folded = fold(&[
            change(1, Create, Some(json!({"secret": 1})), None),
            change(2, Unlink, None, None),
            change(3, Create, Some(json!({"name": "again"})), None),
            change(4, Write, Some(json!({"state": "sale"})), Some(&["state"])),
        ])
        .expect("folded");
        assert_eq!((folded.id, folded.kind), (4, Create));
        assert_eq!(payload(&folded), json!({"name": "again", "state": "sale"}));
        assert!(fold(&[]).is_none());
    }

    fn with_prior(mut event: Event, prior: Prior) -> Event {
        event.prior = prior;
        event
    }

    fn changed(values: Value) -> Prior {
        Prior::Changed(values.to_string())
    }

    #[test]
    fn the_folded_event_knows_what_the_record_was_before_the_whole_history() {
        let folded = fold(&[
            with_prior(
                change(3, Write, Some(json!({"user_id": 6, "state": "sale"})), None),
                changed(json!({"user_id": 5})),
            ),
            with_prior(
                change(4, Write, Some(json!({"user_id": 7, "state": "done"})), None),
                changed(json!({"user_id": 6, "state": "sale"})),
            ),
            with_prior(
                change(5, Write, Some(json!({"user_id": 5, "state": "done"})), None),
                changed(json!({"user_id": 7})),
            ),
        ])
        .expect("folded");
        // Back with salesperson 5, as before the history: only the state differs.
        let Prior::Changed(values) = &folded.prior else {
            panic!("{:?}", folded.prior);
        };
        assert_eq!(
            serde_json::from_str::<Value>(values).expect("JSON"),
            json!({"state": "sale"})
        );
        assert_eq!(folded.folded.map(|f| f.from), Some(3));

        // A history that begins with the record's creation had nothing before it.
        let created = fold(&[
            with_prior(change(1, Create, Some(json!({"a": 1})), None), Prior::None),
            with_prior(
                change(2, Write, Some(json!({"a": 2})), None),
                changed(json!({"a": 1})),
            ),
        ])
        .expect("folded");
        assert_eq!(
            (created.prior, created.folded.map(|f| f.from)),
            (Prior::None, Some(1))
        );

        // Unknown anywhere, or a deletion in the middle, makes it unknown.
        let unknown = fold(&[
            with_prior(
                change(1, Write, Some(json!({"a": 1})), None),
                Prior::Unknown,
            ),
            with_prior(
                change(2, Write, Some(json!({"a": 2})), None),
                changed(json!({"a": 1})),
            ),
        ])
        .expect("folded");
        assert_eq!(unknown.prior, Prior::Unknown);
        let back = fold(&[
            with_prior(
                change(1, Write, Some(json!({"a": 1})), None),
                changed(json!({"a": 0})),
            ),
            with_prior(change(2, Unlink, None, None), changed(json!({"a": 1}))),
            with_prior(change(3, Create, Some(json!({"a": 3})), None), Prior::None),
        ])
        .expect("folded");
        assert_eq!(
            (back.prior, back.folded.map(|f| f.from)),
            (Prior::Unknown, Some(1))
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_replaced_whole() {
        let mut odd = change(1, Write, None, None);
        odd.payload = Some("[1]".into());
        let folded = fold(&[odd, change(2, Write, Some(json!({"a": 1})), None)]).expect("folded");
        assert_eq!(payload(&folded), json!({"a": 1}));
    }
}
