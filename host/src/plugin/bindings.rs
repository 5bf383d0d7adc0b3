//! The WIT contract's generated bindings, kept inside this module; the rest of the host speaks
//! its own types, converted here.

use crate::event::{EventKind, LoggedEvent};

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "feed-plugin",
});

pub use self::smartsync::plugin::types as wit;

use super::{CallContext, ContextField, Manifest as HostManifest, Shaped, ShapedPayload};

impl From<EventKind> for wit::EventKind {
    fn from(kind: EventKind) -> wit::EventKind {
        match kind {
            EventKind::Create => wit::EventKind::Create,
            EventKind::Write => wit::EventKind::Write,
            EventKind::Unlink => wit::EventKind::Unlink,
        }
    }
}

pub fn event(logged: &LoggedEvent, with_payload: bool) -> wit::Event {
    let e = &logged.event;
    wit::Event {
        id: e.id,
        model: e.model.clone(),
        record_id: e.record_id,
        kind: e.kind.into(),
        timestamp: e.timestamp.clone(),
        payload: if with_payload {
            e.payload.clone()
        } else {
            None
        },
        changed_fields: e.changed_fields.clone(),
    }
}

pub fn context(ctx: &CallContext, config: &str) -> wit::Context {
    wit::Context {
        user_id: ctx.user_id,
        device_id: ctx.device_id.clone(),
        app_type: ctx.app_type.clone(),
        company_ids: ctx.company_ids.clone(),
        lang: ctx.lang.clone(),
        tz: ctx.tz.clone(),
        config: config.to_string(),
    }
}

impl From<wit::Manifest> for HostManifest {
    fn from(m: wit::Manifest) -> HostManifest {
        HostManifest {
            name: m.name,
            version: m.version,
            models: m.models,
            needs_payload: m.needs_payload,
            answers_depend_on: None,
        }
    }
}

impl From<wit::ContextField> for ContextField {
    fn from(field: wit::ContextField) -> ContextField {
        match field {
            wit::ContextField::UserId => ContextField::UserId,
            wit::ContextField::DeviceId => ContextField::DeviceId,
            wit::ContextField::CompanyIds => ContextField::CompanyIds,
            wit::ContextField::Lang => ContextField::Lang,
            wit::ContextField::Tz => ContextField::Tz,
        }
    }
}

/// The name of the optional export by which a plugin lets the host reuse its answers.
pub const ANSWERS_DEPEND_ON: &str = "answers-depend-on";

/// Its type: `func() -> option<list<context-field>>`.
pub type AnswersDependOn = wasmtime::component::TypedFunc<(), (Option<Vec<wit::ContextField>>,)>;

impl From<wit::ShapedEvent> for Shaped {
    fn from(s: wit::ShapedEvent) -> Shaped {
        Shaped {
            id: s.id,
            payload: match s.payload {
                wit::PayloadChange::Keep => ShapedPayload::Keep,
                wit::PayloadChange::Drop => ShapedPayload::Drop,
                wit::PayloadChange::Replace(json) => ShapedPayload::Replace(json),
            },
            data: s.data,
        }
    }
}

/// The plugin's own error, as text.
pub fn plugin_error(e: wit::PluginError) -> String {
    match e {
        wit::PluginError::BadConfig(m) => format!("bad config: {m}"),
        wit::PluginError::Failed(m) => m,
    }
}
