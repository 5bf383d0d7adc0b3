//! Conveniences on the contract's types.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{Context, Event, Manifest, PayloadChange, PluginError, ShapedEvent};

impl Manifest {
    /// A manifest for every model, without payloads.
    pub fn new(name: &str, version: &str) -> Manifest {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            models: Vec::new(),
            needs_payload: false,
        }
    }

    /// Only these models are read for the plugin.
    pub fn with_models(mut self, models: &[&str]) -> Manifest {
        self.models = models.iter().map(|m| m.to_string()).collect();
        self
    }

    /// The plugin reads payloads.
    pub fn with_payloads(mut self) -> Manifest {
        self.needs_payload = true;
        self
    }
}

/// A payload split into its fields, each still JSON text borrowed from the event: reading a
/// field parses only that field, so a plugin pays for what it reads.
#[derive(Debug, Clone, Default)]
pub struct Payload<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Payload<'a> {
    /// Splits a JSON object; `None` when `json` is not one.
    pub fn parse(json: &'a str) -> Option<Payload<'a>> {
        serde_json::from_str::<Fields<'a>>(json)
            .ok()
            .map(|Fields(fields)| Payload { fields })
    }

    /// A field's JSON text; Odoo sends `false` for empty fields, which reads as `None` here.
    pub fn raw(&self, field: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .find(|(key, _)| key == field)
            .map(|(_, value)| *value)
            .filter(|v| !matches!(v.get(), "false" | "null"))
    }

    /// Whether the payload has `field` at all, `false` and `null` included (which [`raw`] and the
    /// readers built on it take for absent).
    ///
    /// It tells a record whose field is empty (`"company_id": false`: a shared record) from a
    /// payload that does not say (the source did not send the field), which matters when a
    /// deletion is judged by its payload.
    ///
    /// [`raw`]: Payload::raw
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|(key, _)| key == field)
    }

    /// A field's value, parsed.
    pub fn get(&self, field: &str) -> Option<Value> {
        serde_json::from_str(self.raw(field)?.get()).ok()
    }

    /// An integer field, such as a many2one id (`"user_id": 5`, or `[5, "Name"]` when read
    /// with names).
    pub fn id(&self, field: &str) -> Option<i64> {
        let text = self.raw(field)?.get();
        if text.starts_with('[') {
            return serde_json::from_str::<Vec<Value>>(text)
                .ok()?
                .first()
                .and_then(Value::as_i64);
        }
        text.parse().ok()
    }

    /// A text field, such as a selection (`"state": "assigned"`).
    pub fn str(&self, field: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(field)?;
        serde_json::from_str::<Text<'a>>(raw.get())
            .ok()
            .map(|Text(t)| t)
    }

    /// This version with `changes` put over it: each field of `changes` replaces (or adds)
    /// the field of that name. A record's previous version is its payload with its
    /// [`Prior::Changed`](crate::Prior::Changed) values put over it.
    pub fn overlaid(&self, changes: &Payload<'a>) -> Payload<'a> {
        let mut fields = self.fields.clone();
        for (key, value) in &changes.fields {
            match fields.iter_mut().find(|(k, _)| k == key) {
                Some(field) => field.1 = value,
                None => fields.push((key.clone(), value)),
            }
        }
        Payload { fields }
    }

    /// Keeps only `fields`.
    pub fn retain(&mut self, fields: &[String]) {
        self.fields
            .retain(|(key, _)| fields.iter().any(|f| f == key));
    }

    /// The fields as a JSON object.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(key.as_ref()).unwrap_or_default());
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        out
    }
}

/// The entries of a JSON object in order, values left as text.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

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
                while let Some((Text(key), value)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Chars;
        impl<'de> Visitor<'de> for Chars {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }

            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Chars)
    }
}

impl Event {
    /// The payload split into fields; `None` when there is none or it is not a JSON object.
    pub fn payload(&self) -> Option<Payload<'_>> {
        Payload::parse(self.payload.as_deref()?)
    }
}

impl ShapedEvent {
    /// The event as it is, payload included.
    pub fn keep(event: &Event) -> ShapedEvent {
        ShapedEvent {
            id: event.id,
            payload: PayloadChange::Keep,
            data: None,
            removal: false,
        }
    }

    /// The record left the user's feed: the client receives the event as an `unlink` with
    /// `"reason": "left_feed"`, without payload.
    pub fn remove(event: &Event) -> ShapedEvent {
        ShapedEvent {
            id: event.id,
            payload: PayloadChange::Drop,
            data: None,
            removal: true,
        }
    }

    /// The event with another payload (a JSON object, as [`Payload::to_json`] makes it), or
    /// none.
    pub fn with_payload(mut self, payload: Option<String>) -> ShapedEvent {
        self.payload = match payload {
            Some(json) => PayloadChange::Replace(json),
            None => PayloadChange::Drop,
        };
        self
    }

    /// The replacement payload, parsed; `None` when the payload is kept or dropped.
    pub fn replaced_payload(&self) -> Option<serde_json::Value> {
        match &self.payload {
            PayloadChange::Replace(json) => serde_json::from_str(json).ok(),
            PayloadChange::Keep | PayloadChange::Drop => None,
        }
    }

    /// Adds a `data` object for the client.
    pub fn with_data(mut self, data: Value) -> ShapedEvent {
        self.data = Some(data.to_string());
        self
    }
}

/// Reads the plugin's `config` table from plugins.toml into `T`.
pub fn parse_config<T: DeserializeOwned>(ctx: &Context) -> Result<T, PluginError> {
    serde_json::from_str(&ctx.config).map_err(|e| PluginError::BadConfig(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_as_odoo_sends_them() {
        let json = r#"{"id": 7, "user_id": [5, "Mitchell"], "partner_id": false, "note": null,
                       "state": "assigned", "name": "S\"0\u00e9", "amount": 12.5, "tags": [1, 2]}"#;
        let payload = Payload::parse(json).expect("an object");
        assert_eq!(payload.id("id"), Some(7));
        assert_eq!(payload.id("user_id"), Some(5));
        assert_eq!(payload.id("partner_id"), None);
        assert_eq!(payload.id("note"), None);
        assert_eq!(payload.id("missing"), None);
        assert_eq!(payload.id("state"), None);
        assert_eq!(payload.str("state").as_deref(), Some("assigned"));
        assert!(matches!(payload.str("state"), Some(Cow::Borrowed(_))));
        assert_eq!(payload.str("name").as_deref(), Some("S\"0é"));
        assert_eq!(payload.str("amount"), None);
        assert_eq!(payload.get("amount"), Some(serde_json::json!(12.5)));
        assert_eq!(payload.get("partner_id"), None);
    }

    #[test]
    fn has_tells_an_empty_field_from_a_missing_one() {
        let payload =
            Payload::parse(r#"{"company_id": false, "user_id": null, "state": "done", "x": 0}"#)
                .expect("an object");
        for field in ["company_id", "user_id", "state", "x"] {
            assert!(payload.has(field), "{field}");
        }
        assert!(!payload.has("partner_id"));
        assert!(!payload.has("Company_id"));
        // `raw` reads the empty ones as absent; `has` does not.
        assert_eq!(payload.raw("company_id").map(RawValue::get), None);
        assert_eq!(payload.raw("user_id").map(RawValue::get), None);
        assert!(!Payload::parse("{}").expect("an object").has("company_id"));
    }

    #[test]
    fn retained_fields_make_a_valid_object() {
        let mut payload =
            Payload::parse(r#"{"id": 1, "na\"me": "x", "state": {"a": [1]}, "drop": 3}"#)
                .expect("an object");
        payload.retain(&["id".into(), "na\"me".into(), "state".into()]);
        let json: Value = serde_json::from_str(&payload.to_json()).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({"id": 1, "na\"me": "x", "state": {"a": [1]}})
        );
    }

    #[test]
    fn a_previous_version_is_the_payload_with_the_changed_values_put_back() {
        let now = Payload::parse(r#"{"id": 7, "user_id": 6, "state": "sale"}"#).expect("object");
        let before = Payload::parse(r#"{"user_id": 5, "note": "x"}"#).expect("object");
        let previous = now.overlaid(&before);
        assert_eq!(previous.id("user_id"), Some(5));
        assert_eq!(previous.str("state").as_deref(), Some("sale"));
        assert_eq!(previous.str("note").as_deref(), Some("x"));
        assert_eq!(now.id("user_id"), Some(6));
    }

    #[test]
    fn only_objects_are_payloads() {
        assert!(Payload::parse("[1, 2]").is_none());
        assert!(Payload::parse("{not json").is_none());
        assert!(Payload::parse("{}").is_some());
    }
}
