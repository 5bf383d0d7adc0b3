//! The event: one change to one Odoo record, as the log stores it and the API shows it.

mod fold;
mod prior;
pub use fold::fold;
pub use prior::{Derived, Previous, derive};

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// What happened to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Create,
    Write,
    Unlink,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Write => "write",
            EventKind::Unlink => "unlink",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "create" => Ok(EventKind::Create),
            "write" => Ok(EventKind::Write),
            "unlink" => Ok(EventKind::Unlink),
            other => Err(format!(
                "unknown event kind `{other}`: expected create, write or unlink"
            )),
        }
    }
}

/// What a record was just before an event, as far as the log knows: the plugin's view of the
/// record's previous version, which tells it whether a device held the record before.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Prior {
    /// The record did not exist: it is new to the log, or came back after its deletion.
    None,
    /// Not known: no earlier event of the record was kept when this one was appended.
    #[default]
    Unknown,
    /// The values before this event of the fields it changed, as a JSON object; every other
    /// field was what the payload says.
    Changed(String),
}

/// An event on its way into the log: validated, not yet numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub model: String,
    pub record_id: i64,
    pub kind: EventKind,
    /// RFC 3339 UTC: the source's time when it gave one, else the time of receipt.
    pub timestamp: String,
    /// A JSON object, serialized compactly.
    pub payload: Option<String>,
    pub changed_fields: Option<Vec<String>>,
    /// What makes a second sending of this event a duplicate, not a new event.
    pub dedupe_key: Option<DedupeKey>,
    pub received_at: String,
}

/// How a source names an event so that sending it again does not store it twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupeKey {
    /// The source's own name for the event (`key` in `POST /api/v2/events`): once stored, the
    /// same key is not stored again while that event is kept (retention takes keys with the
    /// events it drops).
    Event(String),
    /// One version of one record, as an Odoo webhook post carries it
    /// ([`crate::odoo::version::dedupe_key`]). The same version again is a duplicate while it is
    /// the record's newest event, or when the record's newest event is from a later time or is
    /// its deletion: a retry, or an old post arriving late. After a newer change from the same
    /// second, it is the record changed back, and is stored again.
    Version(String),
}

impl DedupeKey {
    /// The key as the log stores it.
    pub fn as_str(&self) -> &str {
        match self {
            DedupeKey::Event(key) | DedupeKey::Version(key) => key,
        }
    }
}

/// An event in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Assigned by the host in commit order.
    pub id: i64,
    pub model: String,
    pub record_id: i64,
    pub kind: EventKind,
    pub timestamp: String,
    pub payload: Option<String>,
    pub changed_fields: Option<Vec<String>>,
    pub received_at: String,
    /// How often compaction rewrote the event since it was appended (folding older changes of
    /// its record into it): what was derived from an earlier revision is stale.
    pub rev: u32,
    /// What the record was just before this event (before the whole folded history, for an
    /// event compaction folded older changes into).
    pub prior: Prior,
    /// The history compaction folded into this event, if any.
    pub folded: Option<Folded>,
}

/// The history compaction folded into an event: a device that read part of it holds a
/// version of the record that the event's prior does not tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// The id of the oldest change folded in.
    pub from: i64,
    /// How far compaction had gone (its `compacted_through`) when it last folded changes into
    /// this event: a device that began reading the log after that never saw them.
    pub at: i64,
}

impl Folded {
    /// Whether a device at `position`, which began reading the log from its start when
    /// compaction had gone up to `mark` (see `token::Cursor::tombstone_mark`), may have read
    /// part of the folded history before it was folded.
    pub fn may_have_been_read(&self, position: i64, mark: i64) -> bool {
        self.from <= position && self.at > mark
    }
}

impl Prior {
    /// As the log stores it (see migration 0005): `NULL`, `''` or a JSON object.
    pub fn to_column(&self) -> Option<&str> {
        match self {
            Prior::Unknown => None,
            Prior::None => Some(""),
            Prior::Changed(values) => Some(values),
        }
    }

    pub fn from_column(column: Option<String>) -> Prior {
        match column {
            None => Prior::Unknown,
            Some(text) if text.is_empty() => Prior::None,
            Some(values) => Prior::Changed(values),
        }
    }
}

impl Event {
    pub fn from_new(id: i64, new: NewEvent) -> Event {
        Event {
            id,
            model: new.model,
            record_id: new.record_id,
            kind: new.kind,
            timestamp: new.timestamp,
            payload: new.payload,
            changed_fields: new.changed_fields,
            received_at: new.received_at,
            rev: 0,
            prior: Prior::Unknown,
            folded: None,
        }
    }

    /// The event as one element of a pull answer's `events` array: the seed's five fields, then
    /// `payload` and `changed_fields` when the event has them.
    pub fn to_wire_json(&self) -> String {
        self.wire_json_with(self.payload.as_deref(), None)
    }

    /// The wire form with another payload, and a `data` object (both JSON objects, checked by
    /// the caller): how a plugin's shaped event reaches the client.
    pub fn wire_json_with(&self, payload: Option<&str>, data: Option<&str>) -> String {
        self.render(
            self.kind,
            payload,
            self.changed_fields.as_deref(),
            None,
            data,
        )
    }

    /// The event as the removal of its record from a device's feed: an `unlink` with
    /// `"reason": "left_feed"`, without payload, with `data` (a JSON object) when given.
    pub fn left_feed_wire_json(&self, data: Option<&str>) -> String {
        self.render(EventKind::Unlink, None, None, Some("left_feed"), data)
    }

    fn render(
        &self,
        kind: EventKind,
        payload: Option<&str>,
        changed_fields: Option<&[String]>,
        reason: Option<&str>,
        data: Option<&str>,
    ) -> String {
        let mut out = String::with_capacity(
            96 + self.model.len() + payload.map_or(0, str::len) + data.map_or(0, str::len),
        );
        out.push_str("{\"id\":");
        let _ = write!(out, "{}", self.id);
        out.push_str(",\"model\":");
        push_json_str(&mut out, &self.model);
        out.push_str(",\"record_id\":");
        let _ = write!(out, "{}", self.record_id);
        out.push_str(",\"event\":\"");
        out.push_str(kind.as_str());
        out.push_str("\",\"timestamp\":");
        push_json_str(&mut out, &self.timestamp);
        if let Some(payload) = payload {
            // Payloads are validated JSON objects, so they are spliced in as they are.
            out.push_str(",\"payload\":");
            out.push_str(payload);
        }
        if let Some(fields) = changed_fields {
            out.push_str(",\"changed_fields\":");
            push_json_string_list(&mut out, fields);
        }
        if let Some(reason) = reason {
            out.push_str(",\"reason\":");
            push_json_str(&mut out, reason);
        }
        if let Some(data) = data {
            out.push_str(",\"data\":");
            out.push_str(data);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
impl NewEvent {
    /// A `write` of record 1 of `model`, received now: for tests.
    pub(crate) fn test_write(model: &str, dedupe_key: Option<&str>) -> NewEvent {
        NewEvent {
            model: model.into(),
            record_id: 1,
            kind: EventKind::Write,
            timestamp: now_rfc3339(),
            payload: None,
            changed_fields: None,
            dedupe_key: dedupe_key.map(|key| DedupeKey::Event(key.into())),
            received_at: now_rfc3339(),
        }
    }
}

/// An event of the log together with its pre-rendered wire form, shared by every reader.
#[derive(Debug)]
pub struct LoggedEvent {
    pub event: Event,
    pub wire: Box<str>,
}

impl LoggedEvent {
    pub fn new(event: Event) -> Arc<LoggedEvent> {
        let wire = event.to_wire_json().into_boxed_str();
        Arc::new(LoggedEvent { event, wire })
    }

    /// Bytes this entry keeps alive, roughly: used to bound the in-memory tail.
    pub fn weight(&self) -> usize {
        let e = &self.event;
        std::mem::size_of::<LoggedEvent>()
            + e.model.len()
            + e.timestamp.len()
            + e.received_at.len()
            + e.payload.as_ref().map_or(0, String::len)
            + e.changed_fields
                .as_ref()
                .map_or(0, |f| f.iter().map(|s| s.len() + 24).sum())
            + self.wire.len()
    }
}

/// A list of strings as a JSON array, as `changed_fields` is stored and sent.
pub fn json_string_list(items: &[String]) -> String {
    let mut out = String::new();
    push_json_string_list(&mut out, items);
    out
}

fn push_json_string_list(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, item);
    }
    out.push(']');
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's escaping, without allocating a Value.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Now, as the log writes times: RFC 3339, UTC, microseconds.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// A time as the log writes times (see [`now_rfc3339`]): stored times compare as strings.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a time given by a client or by Odoo and writes it as RFC 3339 UTC.
///
/// Accepts RFC 3339 with any offset, and Odoo's own form (`2024-01-15 10:30:00`, optionally with
/// fractional seconds), which is always UTC.
pub fn normalize_timestamp(input: &str) -> Option<String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(input) {
        return Some(
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(input, format) {
            return Some(t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_normalized_to_utc() {
        assert_eq!(
            normalize_timestamp("2024-01-15 10:30:00").as_deref(),
            Some("2024-01-15T10:30:00Z")
        );
        assert_eq!(
            normalize_timestamp("2024-01-15 10:30:00.250000").as_deref(),
            Some("2024-01-15T10:30:00.250Z")
        );
        assert_eq!(
            normalize_timestamp("2024-01-15T12:30:00+02:00").as_deref(),
            Some("2024-01-15T10:30:00Z")
        );
        assert_eq!(normalize_timestamp("yesterday"), None);
        assert_eq!(normalize_timestamp("2024-13-45 10:30:00"), None);
    }

    #[test]
    fn wire_json_is_valid_and_complete() {
        let event = Event {
            id: 7,
            model: "sale.order".into(),
            record_id: 42,
            kind: EventKind::Write,
            timestamp: "2024-01-15T10:30:00Z".into(),
            payload: Some(r#"{"name":"S\"00042","state":"sale"}"#.into()),
            changed_fields: Some(vec!["state".into()]),
            received_at: "2024-01-15T10:30:01Z".into(),
            rev: 0,
            prior: Prior::Unknown,
            folded: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&event.to_wire_json()).expect("wire form is JSON");
        assert_eq!(v["id"], 7);
        assert_eq!(v["model"], "sale.order");
        assert_eq!(v["record_id"], 42);
        assert_eq!(v["event"], "write");
        assert_eq!(v["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(v["payload"]["name"], "S\"00042");
        assert_eq!(v["changed_fields"][0], "state");
        assert!(v.get("received_at").is_none());
    }
}
