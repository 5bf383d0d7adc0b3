//! Coalescing: within one answer, only the latest change of each record.
//!
//! | the record's changes in the answer | what is sent |
//! |---|---|
//! | `create`, then `write`s | one `create`, with the latest payload |
//! | `write`s | one `write`, with the union of their `changed_fields` (none when one is unknown) |
//! | anything, then `unlink` | `unlink` |
//! | `create` ... `unlink` | nothing: the record came and went |
//! | `unlink`, then `create` or `write`s | what follows the `unlink`, by the rows above: the record came back |
//!
//! A removal from the feed (`"reason": "left_feed"`) counts as an `unlink`. The coalesced event takes the id and timestamp of the record's last change, and answers stay
//! in id order. The device's position still moves past every event read.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, EventKind, LoggedEvent};
use crate::plugin::ShapedWire;

/// One event of an answer: as the log holds it, as a plugin shaped it, or merged.
pub enum AnswerEvent {
    Logged(Arc<LoggedEvent>),
    Shaped {
        source: Arc<LoggedEvent>,
        shaped: Arc<ShapedWire>,
    },
    Merged {
        event: Event,
        data: Option<String>,
    },
}

impl AnswerEvent {
    pub fn event(&self) -> &Event {
        match self {
            AnswerEvent::Logged(e) | AnswerEvent::Shaped { source: e, .. } => &e.event,
            AnswerEvent::Merged { event, .. } => event,
        }
    }

    /// What the client is told happened: an `unlink` for a removal from its feed.
    pub fn kind(&self) -> EventKind {
        match self {
            AnswerEvent::Shaped { shaped, .. } if shaped.removal => EventKind::Unlink,
            other => other.event().kind,
        }
    }

    /// The payload the client receives.
    fn payload(&self) -> Option<&str> {
        match self {
            AnswerEvent::Logged(e) => e.event.payload.as_deref(),
            AnswerEvent::Shaped { source, shaped } => {
                shaped.resolve(source.event.payload.as_deref())
            }
            AnswerEvent::Merged { event, .. } => event.payload.as_deref(),
        }
    }

    fn data(&self) -> Option<&str> {
        match self {
            AnswerEvent::Logged(_) => None,
            AnswerEvent::Shaped { shaped, .. } => shaped.data.as_deref(),
            AnswerEvent::Merged { data, .. } => data.as_deref(),
        }
    }

    /// Appends the event's JSON to `out`.
    pub fn render(&self, out: &mut String) {
        match self {
            AnswerEvent::Logged(e) => out.push_str(&e.wire),
            AnswerEvent::Shaped { shaped, .. } => out.push_str(&shaped.wire),
            other @ AnswerEvent::Merged { .. } => {
                out.push_str(&other.event().wire_json_with(other.payload(), other.data()))
            }
        }
    }

    /// Roughly how long the rendered event is.
    pub fn size_hint(&self) -> usize {
        match self {
            AnswerEvent::Logged(e) => e.wire.len(),
            AnswerEvent::Shaped { shaped, .. } => shaped.wire.len(),
            other @ AnswerEvent::Merged { .. } => {
                128 + other.payload().map_or(0, str::len) + other.data().map_or(0, str::len)
            }
        }
    }
}

/// Applies the table above to `events`, which are in id order, for a device that had read the
/// log up to `position` before them, having begun when compaction had gone up to `mark`.
pub fn coalesce(events: Vec<AnswerEvent>, position: i64, mark: i64) -> Vec<AnswerEvent> {
    let mut groups: HashMap<(String, i64), Vec<AnswerEvent>> = HashMap::new();
    for event in events {
        let key = (event.event().model.clone(), event.event().record_id);
        groups.entry(key).or_default().push(event);
    }
    let mut out: Vec<AnswerEvent> = groups
        .into_values()
        .filter_map(|changes| merge(changes, position, mark))
        .collect();
    out.sort_by_key(|e| e.event().id);
    out
}

/// One record's changes, oldest first, as one event (or none).
fn merge(mut changes: Vec<AnswerEvent>, position: i64, mark: i64) -> Option<AnswerEvent> {
    let first = changes.first()?;
    // Created within this answer: unless compaction folded into that `create` a history the
    // device may have read part of, when the device may hold the record already.
    let created_here = first.kind() == EventKind::Create
        && first
            .event()
            .folded
            .is_none_or(|f| !f.may_have_been_read(position, mark));
    let last = changes.pop()?;
    if changes.is_empty() {
        return Some(last);
    }
    if last.kind() == EventKind::Unlink {
        // Came and went, or went.
        return (!created_here).then_some(last);
    }
    // What follows the record's last deletion (if it came back) says what it is now.
    let since = changes
        .iter()
        .rposition(|c| c.kind() == EventKind::Unlink)
        .map_or(0, |at| at + 1);
    let changes = changes.split_off(since);
    let Some(first) = changes.first() else {
        // The record came back with this change alone.
        return Some(last);
    };
    let first_kind = first.kind();
    let mut event = last.event().clone();
    event.payload = last.payload().map(str::to_string).or_else(|| {
        changes
            .iter()
            .rev()
            .find_map(|c| c.payload().map(str::to_string))
    });
    event.kind = first_kind;
    event.changed_fields = match first_kind {
        // A created record is sent whole.
        EventKind::Create => None,
        _ => union_of_changed_fields(changes.iter().chain([&last])),
    };
    let data = last.data().map(str::to_string);
    Some(AnswerEvent::Merged { event, data })
}

fn union_of_changed_fields<'a>(
    changes: impl Iterator<Item = &'a AnswerEvent>,
) -> Option<Vec<String>> {
    let mut union: Vec<String> = Vec::new();
    for change in changes {
        for field in change.event().changed_fields.as_ref()? {
            if !union.contains(field) {
                union.push(field.clone());
            }
        }
    }
    Some(union)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(
        id: i64,
        record_id: i64,
        kind: EventKind,
        payload: Option<&str>,
        fields: Option<&[&str]>,
    ) -> AnswerEvent {
        AnswerEvent::Logged(LoggedEvent::new(Event {
            id,
            model: "sale.order".into(),
            record_id,
            kind,
            timestamp: format!("2024-01-15T10:00:{id:02}Z"),
            payload: payload.map(str::to_string),
            changed_fields: fields.map(|f| f.iter().map(|s| s.to_string()).collect()),
            received_at: "2024-01-15T10:00:00Z".into(),
            rev: 0,
            prior: crate::event::Prior::Unknown,
            folded: None,
        }))
    }

    /// (id, record_id, kind, payload, changed_fields) of each event.
    type Summary = (i64, i64, EventKind, Option<String>, Option<Vec<String>>);

    fn summary(events: &[AnswerEvent]) -> Vec<Summary> {
        events
            .iter()
            .map(|e| {
                let ev = e.event();
                (
                    ev.id,
                    ev.record_id,
                    ev.kind,
                    e.payload().map(str::to_string),
                    ev.changed_fields.clone(),
                )
            })
            .collect()
    }

    use EventKind::{Create, Unlink, Write};

    #[test]
    fn create_then_writes_is_one_create_with_the_latest_payload() {
        let out = coalesce(
            vec![
                change(1, 7, Create, Some(r#"{"state":"draft"}"#), None),
                change(2, 7, Write, Some(r#"{"state":"sale"}"#), Some(&["state"])),
                change(3, 7, Write, None, Some(&["note"])),
            ],
            0,
            0,
        );
        assert_eq!(
            summary(&out),
            vec![(3, 7, Create, Some(r#"{"state":"sale"}"#.into()), None)]
        );
        assert_eq!(out[0].event().timestamp, "2024-01-15T10:00:03Z");
    }

    #[test]
    fn writes_are_one_write_with_the_union_of_changed_fields() {
        let out = coalesce(
            vec![
                change(1, 7, Write, Some(r#"{"a":1}"#), Some(&["a"])),
                change(2, 7, Write, Some(r#"{"b":2}"#), Some(&["b", "a"])),
            ],
            0,
            0,
        );
        assert_eq!(
            summary(&out),
            vec![(
                2,
                7,
                Write,
                Some(r#"{"b":2}"#.into()),
                Some(vec!["a".into(), "b".into()])
            )]
        );
        // A write that does not say what changed makes the union unknown.
        let out = coalesce(
            vec![
                change(1, 7, Write, None, Some(&["a"])),
                change(2, 7, Write, None, None),
            ],
            0,
            0,
        );
        assert_eq!(summary(&out), vec![(2, 7, Write, None, None)]);
    }

    #[test]
    fn anything_then_unlink_is_unlink_and_create_then_unlink_is_nothing() {
        let out = coalesce(
            vec![
                change(1, 7, Write, None, None),
                change(2, 7, Unlink, None, None),
                change(3, 8, Create, None, None),
                change(4, 8, Write, None, None),
                change(5, 8, Unlink, None, None),
            ],
            0,
            0,
        );
        assert_eq!(summary(&out), vec![(2, 7, Unlink, None, None)]);
    }

    #[test]
    fn a_record_that_came_back_is_what_follows_its_deletion() {
        let out = coalesce(
            vec![
                change(1, 7, Write, Some(r#"{"v":1}"#), None),
                change(2, 7, Unlink, None, None),
                change(3, 7, Create, Some(r#"{"v":3}"#), None),
                change(4, 7, Write, Some(r#"{"v":4}"#), Some(&["v"])),
                change(5, 8, Unlink, None, None),
                change(6, 8, Write, Some(r#"{"w":6}"#), Some(&["w"])),
            ],
            0,
            0,
        );
        assert_eq!(
            summary(&out),
            vec![
                (4, 7, Create, Some(r#"{"v":4}"#.into()), None),
                (
                    6,
                    8,
                    Write,
                    Some(r#"{"w":6}"#.into()),
                    Some(vec!["w".into()])
                ),
            ]
        );
    }

    #[test]
    fn a_folded_create_whose_history_the_device_read_is_not_taken_for_a_new_record() {
        let folded = |id: i64, from: i64| {
            let AnswerEvent::Logged(e) = change(id, 7, Create, None, None) else {
                unreachable!()
            };
            let mut event = e.event.clone();
            event.folded = Some(crate::event::Folded { from, at: 20 });
            AnswerEvent::Logged(LoggedEvent::new(event))
        };
        // The device read event 3, folded since into 10: it may hold the record.
        let out = coalesce(vec![folded(10, 3), change(12, 7, Unlink, None, None)], 5, 0);
        assert_eq!(summary(&out), vec![(12, 7, Unlink, None, None)]);
        // A device that had read nothing of it: the record came and went.
        let out = coalesce(vec![folded(10, 3), change(12, 7, Unlink, None, None)], 2, 0);
        assert!(out.is_empty());
        // Nor had one that began reading after the fold, whatever its position.
        let out = coalesce(
            vec![folded(10, 3), change(12, 7, Unlink, None, None)],
            5,
            20,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn records_stay_apart_and_answers_stay_in_id_order() {
        let out = coalesce(
            vec![
                change(1, 7, Create, None, None),
                change(2, 8, Write, None, None),
                change(3, 7, Write, None, None),
                change(4, 9, Unlink, None, None),
            ],
            0,
            0,
        );
        let ids: Vec<(i64, i64, EventKind)> = out
            .iter()
            .map(|e| (e.event().id, e.event().record_id, e.event().kind))
            .collect();
        assert_eq!(ids, vec![(2, 8, Write), (3, 7, Create), (4, 9, Unlink)]);
    }

    #[test]
    fn the_same_record_id_in_two_models_is_two_records() {
        let mut partner = change(2, 7, Unlink, None, None);
        if let AnswerEvent::Logged(e) = &partner {
            let mut ev = e.event.clone();
            ev.model = "res.partner".into();
            partner = AnswerEvent::Logged(LoggedEvent::new(ev));
        }
        let out = coalesce(vec![change(1, 7, Create, None, None), partner], 0, 0);
        assert_eq!(out.len(), 2);
    }
}
