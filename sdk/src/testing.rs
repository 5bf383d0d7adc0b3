//! Building inputs for native unit tests of a plugin.

use serde_json::Value;

use crate::{Context, ContextField, Event, EventKind, Plugin};

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

/// Checks, on `events` shaped for `ctx`, the promise a plugin makes by returning
/// `Some(fields)` from [`Plugin::answers_depend_on`]: each event's answer is the same whether
/// the event is shaped with the others or alone, and the same when the context fields not in
/// `fields` take other values. Panics, naming what differs; does nothing for a plugin that
/// returns `None`.
///
/// Each undeclared field is tried with one other value (another user and device, no companies,
/// another language and time zone), so give it events that exercise every branch of `shape`,
/// and call it once per config that changes what `shape` reads: the declaration must hold for
/// every config.
pub fn check_answers_reusable<P: Plugin>(ctx: &Context, events: &[Event]) {
    let Some(fields) = P::answers_depend_on() else {
        return;
    };
    assert!(!events.is_empty(), "no events to check the promise on");
    let together = P::shape(ctx.clone(), events.to_vec());
    assert!(
        together.is_ok(),
        "shape failed, so nothing could be checked: {together:?}"
    );
    let alone: Result<Vec<_>, _> = events
        .iter()
        .map(|e| P::shape(ctx.clone(), vec![e.clone()]))
        .collect::<Result<Vec<_>, _>>()
        .map(|answers| answers.into_iter().flatten().collect());
    assert_eq!(
        together, alone,
        "shaping the events together answers otherwise than shaping each alone"
    );
    let mut others = ctx.clone();
    let mut changed = Vec::new();
    let declared = |f: ContextField| fields.contains(&f);
    if !declared(ContextField::UserId) {
        others.user_id = ctx.user_id.wrapping_add(1_000_003);
        changed.push("user-id");
    }
    if !declared(ContextField::DeviceId) {
        others.device_id = format!("{}-other", ctx.device_id);
        changed.push("device-id");
    }
    if !declared(ContextField::CompanyIds) {
        others.company_ids = Vec::new();
        changed.push("company-ids");
    }
    if !declared(ContextField::Lang) {
        others.lang = Some(
            if ctx.lang.as_deref() == Some("fr_FR") {
                "ar_001"
            } else {
                "fr_FR"
            }
            .into(),
        );
        changed.push("lang");
    }
    if !declared(ContextField::Tz) {
        others.tz = Some(
            if ctx.tz.as_deref() == Some("UTC") {
                "Asia/Tokyo"
            } else {
                "UTC"
            }
            .into(),
        );
        changed.push("tz");
    }
    assert_eq!(
        together,
        P::shape(others, events.to_vec()),
        "the answer changed with context fields not declared in answers_depend_on: {changed:?}"
    );
}
