//! Building inputs for native unit tests of a plugin.

use serde_json::Value;

use crate::{Context, Event, EventKind};

/// The context of user `user_id` in company 1, with an empty config.
pub fn context(user_id: i64) -> Context {
    Context {
        user_id,
        device_id: "test-device".into(),
        app_type: "test_app".into(),
        company_ids: vec![1],
        lang: None,
        tz: None,
        config: "{}".into(),
    }
}

/// `ctx` with `config` as the plugin's config table.
pub fn with_config(mut ctx: Context, config: Value) -> Context {
    ctx.config = config.to_string();
    ctx
}

/// An event without payload.
pub fn event(id: i64, model: &str, record_id: i64, kind: EventKind) -> Event {
    Event {
        id,
        model: model.into(),
        record_id,
        kind,
        timestamp: "2024-01-15T10:30:00Z".into(),
        payload: None,
        changed_fields: None,
    }
}

/// `event` with `payload`.
pub fn with_payload(mut event: Event, payload: Value) -> Event {
    event.payload = Some(payload.to_string());
    event
}
