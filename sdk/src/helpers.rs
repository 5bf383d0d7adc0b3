//! Conveniences on the contract's types.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

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

/// A payload parsed once, for reading several fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload(pub Map<String, Value>);

impl Payload {
    /// A field's value; Odoo sends `false` for empty fields, which reads as `None` here.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0
            .get(field)
            .filter(|v| !matches!(v, Value::Bool(false) | Value::Null))
    }

    /// An integer field, such as a many2one id (`"user_id": 5`).
    pub fn id(&self, field: &str) -> Option<i64> {
        match self.get(field)? {
            Value::Number(n) => n.as_i64(),
            // A many2one read with its name: [5, "Mitchell Admin"].
            Value::Array(pair) => pair.first().and_then(Value::as_i64),
            _ => None,
        }
    }

    /// A text field, such as a selection (`"state": "assigned"`).
    pub fn str(&self, field: &str) -> Option<&str> {
        self.get(field)?.as_str()
    }

    /// Keeps only `fields`.
    pub fn retain(&mut self, fields: &[String]) {
        self.0.retain(|key, _| fields.iter().any(|f| f == key));
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

impl Event {
    /// The payload as a JSON object; `None` when there is none or it is not an object.
    pub fn payload(&self) -> Option<Payload> {
        match serde_json::from_str(self.payload.as_deref()?) {
            Ok(Value::Object(map)) => Some(Payload(map)),
            _ => None,
        }
    }
}

impl ShapedEvent {
    /// The event as it is, payload included.
    pub fn keep(event: Event) -> ShapedEvent {
        ShapedEvent {
            id: event.id,
            payload: PayloadChange::Keep,
            data: None,
        }
    }

    /// The event with another payload (or none).
    pub fn with_payload(mut self, payload: Option<&Payload>) -> ShapedEvent {
        self.payload = match payload {
            Some(payload) => PayloadChange::Replace(payload.to_json()),
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
