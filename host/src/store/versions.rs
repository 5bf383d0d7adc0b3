//! Whether an appended event is stored, or is a duplicate of one the log holds: the rules of
//! [`DedupeKey`], the same for every backend. A backend looks up the key and the record's
//! newest event; [`judge`] decides.

use crate::event::{DedupeKey, EventKind, NewEvent};

/// A record's newest event, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    pub id: i64,
    pub timestamp: String,
    pub kind: EventKind,
    pub payload: Option<String>,
}

impl Newest {
    /// Whether this event makes `event`, a version of the same record, an old one: it is from
    /// a later time, or it is the record's deletion. Nothing changes a record after its
    /// deletion: a version from up to the deletion's time (Odoo's deletion carries the last
    /// write_date) is an old one arriving late.
    pub fn supersedes(&self, event: &NewEvent) -> bool {
        if self.kind == EventKind::Unlink {
            !is_later(&event.timestamp, &self.timestamp)
        } else {
            is_later(&self.timestamp, &event.timestamp)
        }
    }
}

/// What becomes of an event with a dedupe key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not stored: the answer is this event's id.
    Duplicate(i64),
    /// Stored; `forget` is an event whose key moves to the new one (the record changed back to
    /// a version it had).
    Store { forget: Option<i64> },
}

/// Decides for `event` with key `dedupe`, which the log holds at `known` (if it does), the
/// record's newest event being `newest`.
///
/// A key the log holds is a duplicate for an event key; for a record version, while the key's
/// event is the record's newest, or when the newest is from a later time or is the record's
/// deletion (an old post arriving late); after a newer change from the same moment, the record
/// changed back to it. A version the log does not hold is a duplicate of the record's newest
/// event when that one supersedes it (posts that overtook each other, or a retry whose first
/// copy compaction has folded away).
pub fn judge(
    dedupe: &DedupeKey,
    known: Option<i64>,
    newest: Option<&Newest>,
    event: &NewEvent,
) -> Verdict {
    match (known, dedupe) {
        (Some(id), DedupeKey::Event(_)) => Verdict::Duplicate(id),
        (Some(id), DedupeKey::Version(_)) => match newest {
            None => Verdict::Duplicate(id),
            Some(newest) if newest.id == id || newest.supersedes(event) => Verdict::Duplicate(id),
            Some(_) => Verdict::Store { forget: Some(id) },
        },
        (None, DedupeKey::Version(_)) => match newest.filter(|n| n.supersedes(event)) {
            Some(newest) => Verdict::Duplicate(newest.id),
            None => Verdict::Store { forget: None },
        },
        (None, DedupeKey::Event(_)) => Verdict::Store { forget: None },
    }
}

/// Whether RFC 3339 time `a` is after `b`; false when either does not read as one.
fn is_later(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}
