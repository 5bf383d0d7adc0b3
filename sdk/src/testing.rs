//! Building inputs for native unit tests of a plugin.

use serde_json::Value;

use crate::{Context, ContextField, Event, EventKind, PayloadChange, Plugin, Prior, ShapedEvent};

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

/// An event without payload. A create's record did not exist before it; the record of a write
/// or an unlink was as the event's payload says (a change of nothing a rule reads): set another
/// prior with [`with_prior`].
pub fn event(id: i64, model: &str, record_id: i64, kind: EventKind) -> Event {
    Event {
        id,
        model: model.into(),
        record_id,
        kind,
        timestamp: "2024-01-15T10:30:00Z".into(),
        payload: None,
        changed_fields: None,
        prior: match kind {
            EventKind::Create => Prior::None,
            EventKind::Write | EventKind::Unlink => Prior::Changed("{}".into()),
        },
    }
}

/// `event` with what its record was before: `Some(values)`, the values before it of the
/// fields it changed; `None`, not known.
pub fn with_prior(mut event: Event, before: Option<Value>) -> Event {
    event.prior = match before {
        Some(values) => Prior::Changed(values.to_string()),
        None => Prior::Unknown,
    };
    event
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

/// Checks, on `events` shaped for `ctx`, that the plugin's scope rules hold for deletions: an
/// `unlink` never reaches further with a record's values than a create or write of the same
/// record does. Panics, naming the event and what differs; panics too on empty `events` and when
/// `shape` fails.
///
/// Each event that has a payload is shaped alone, and:
///
/// - a create or write that `shape` drops for `ctx`: the same event as an `unlink` (same model,
///   record_id and payload) must be dropped too, or answered exactly as that `unlink` without a
///   payload is answered (a kept payload counting as none there), that is, delivered (a device
///   may hold the record) with none of the record's values, in its payload or in its `data`;
/// - an `unlink` that `shape` answers otherwise than the same `unlink` without a payload (its
///   payload kept or replaced, or `data` drawn from it): a `create` with that payload must be
///   delivered too.
///
/// Give it events that exercise every scope rule of the plugin, with payloads inside the
/// caller's scope, outside it, and that do not say (the field a rule reads missing, `false` or
/// `null`), and call it once per config that turns a rule on: the rules must hold under every
/// config.
pub fn check_deletions_scoped<P: Plugin>(ctx: &Context, events: &[Event]) {
    assert!(!events.is_empty(), "no events to check deletions on");
    for event in events.iter().filter(|e| e.payload.is_some()) {
        let unlink = Event {
            kind: EventKind::Unlink,
            ..event.clone()
        };
        let bare = Event {
            payload: None,
            ..unlink.clone()
        };
        let bare_answer = answer_alone::<P>(ctx, &bare).map(|mut shaped| {
            if shaped.payload == PayloadChange::Keep {
                shaped.payload = PayloadChange::Drop;
            }
            shaped
        });
        let carries_values =
            |answer: &Option<ShapedEvent>| answer.is_some() && *answer != bare_answer;
        match event.kind {
            EventKind::Create | EventKind::Write => {
                // A removal says the record is not the caller's: like a drop, here.
                if answer_alone::<P>(ctx, event).is_some_and(|a| !a.removal) {
                    continue;
                }
                let deleted = answer_alone::<P>(ctx, &unlink);
                assert!(
                    !carries_values(&deleted),
                    "{} is dropped for this caller, but the same record's deletion is answered \
                     {deleted:?}, where a deletion without payload is answered {bare_answer:?}: \
                     it hands the record's values to a caller its create or write does not reach",
                    describe(event)
                );
            }
            EventKind::Unlink => {
                let deleted = answer_alone::<P>(ctx, event);
                if !carries_values(&deleted) {
                    continue;
                }
                let create = Event {
                    kind: EventKind::Create,
                    ..event.clone()
                };
                assert!(
                    answer_alone::<P>(ctx, &create).is_some(),
                    "{} is answered {deleted:?}, with the record's values (a deletion without \
                     payload is answered {bare_answer:?}), but a create with the same payload is \
                     dropped for this caller",
                    describe(event)
                );
            }
        }
    }
}

/// What `P` answers for `event` shaped alone for `ctx`: `None` when it drops it.
fn answer_alone<P: Plugin>(ctx: &Context, event: &Event) -> Option<ShapedEvent> {
    let answer = match P::shape(ctx.clone(), vec![event.clone()]) {
        Ok(answer) => answer,
        Err(err) => panic!(
            "shape failed on {}, so nothing could be checked: {err:?}",
            describe(event)
        ),
    };
    assert!(
        answer.len() <= 1 && answer.iter().all(|shaped| shaped.id == event.id),
        "shape answered {answer:?} for the single {}",
        describe(event)
    );
    answer.into_iter().next()
}

/// An event as a failed check names it.
fn describe(event: &Event) -> String {
    let kind = match event.kind {
        EventKind::Create => "create",
        EventKind::Write => "write",
        EventKind::Unlink => "unlink",
    };
    format!(
        "the {kind} of {} {} (event {}, payload {})",
        event.model,
        event.record_id,
        event.id,
        event.payload.as_deref().unwrap_or("none")
    )
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use serde_json::json;

    use super::*;
    use crate::{Manifest, PluginError};

    /// Runs `check` and returns its panic message, or `None` when it passed.
    fn failure(check: impl FnOnce()) -> Option<String> {
        let err = catch_unwind(AssertUnwindSafe(check)).err()?;
        Some(
            err.downcast_ref::<String>()
                .cloned()
                .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        )
    }

    /// Where a record stands for a caller of company 1.
    #[derive(PartialEq)]
    enum Scope {
        In,
        Out,
        Unknown,
    }

    fn scope(event: &Event) -> Scope {
        match event.payload().map(|p| p.id("company_id")) {
            Some(Some(1)) => Scope::In,
            Some(Some(_)) => Scope::Out,
            _ => Scope::Unknown,
        }
    }

    /// Keeps company 1's records and those it cannot place, and every deletion as it is: the
    /// leak the check is for.
    struct Leaky;

    impl Plugin for Leaky {
        fn describe() -> Manifest {
            Manifest::new("leaky", "0")
        }
        fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
            Ok(events
                .into_iter()
                .filter(|e| e.kind == EventKind::Unlink || scope(e) != Scope::Out)
                .map(|e| ShapedEvent::keep(&e))
                .collect())
        }
    }

    /// Judges deletions like creates, and sends those it cannot place without their payload.
    struct Scoped;

    impl Plugin for Scoped {
        fn describe() -> Manifest {
            Manifest::new("scoped", "0")
        }
        fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
            Ok(events
                .into_iter()
                .filter_map(|e| match (e.kind, scope(&e)) {
                    (_, Scope::Out) => None,
                    (EventKind::Unlink, Scope::Unknown) => {
                        Some(ShapedEvent::keep(&e).with_payload(None))
                    }
                    _ => Some(ShapedEvent::keep(&e)),
                })
                .collect())
        }
    }

    /// Like `Scoped`, but tells other companies' deletions by a `data` object drawn from their
    /// payload.
    struct LeakyData;

    impl Plugin for LeakyData {
        fn describe() -> Manifest {
            Manifest::new("leaky-data", "0")
        }
        fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
            let (unlinks, others): (Vec<Event>, Vec<Event>) = events
                .into_iter()
                .partition(|e| e.kind == EventKind::Unlink);
            let mut shaped = Scoped::shape(ctx, others)?;
            shaped.extend(unlinks.into_iter().map(|e| {
                let name = e.payload().and_then(|p| p.get("name"));
                ShapedEvent::keep(&e)
                    .with_payload(None)
                    .with_data(json!({ "name": name }))
            }));
            shaped.sort_by_key(|e| e.id);
            Ok(shaped)
        }
    }

    /// Sends no creates or writes at all, and every deletion whole.
    struct OnlyDeletions;

    impl Plugin for OnlyDeletions {
        fn describe() -> Manifest {
            Manifest::new("only-deletions", "0")
        }
        fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
            Ok(events
                .into_iter()
                .filter(|e| e.kind == EventKind::Unlink)
                .map(|e| ShapedEvent::keep(&e))
                .collect())
        }
    }

    struct Failing;

    impl Plugin for Failing {
        fn describe() -> Manifest {
            Manifest::new("failing", "0")
        }
        fn shape(_ctx: Context, _events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
            Err(PluginError::Failed("no".into()))
        }
    }

    fn of_company(id: i64, kind: EventKind, company: serde_json::Value) -> Event {
        with_payload(
            event(id, "sale.order", 100 + id, kind),
            json!({"id": 100 + id, "name": "S1", "company_id": company}),
        )
    }

    fn events() -> Vec<Event> {
        vec![
            of_company(1, EventKind::Create, json!(1)),
            of_company(2, EventKind::Write, json!(2)),
            of_company(3, EventKind::Unlink, json!(2)),
            of_company(4, EventKind::Unlink, json!(1)),
            of_company(5, EventKind::Unlink, json!(false)),
            event(6, "sale.order", 106, EventKind::Unlink),
        ]
    }

    #[test]
    fn deletions_judged_like_creates_pass() {
        check_deletions_scoped::<Scoped>(&context(5), &events());
    }

    #[test]
    fn a_deletion_delivered_with_values_a_create_would_not_get_fails() {
        let message = failure(|| check_deletions_scoped::<Leaky>(&context(5), &events()))
            .expect("the leak is caught");
        assert!(
            message.contains("the write of sale.order 102 (event 2"),
            "{message}"
        );
        assert!(message.contains("does not reach"), "{message}");
    }

    #[test]
    fn values_in_data_count_too() {
        let message = failure(|| check_deletions_scoped::<LeakyData>(&context(5), &events()))
            .expect("the leak is caught");
        // The data object, as the message quotes it.
        assert!(message.contains(r#"\"name\":\"S1\""#), "{message}");
    }

    #[test]
    fn a_deletion_alone_is_checked_against_the_create() {
        let deletion = [of_company(1, EventKind::Unlink, json!(1))];
        let message = failure(|| check_deletions_scoped::<OnlyDeletions>(&context(5), &deletion))
            .expect("the leak is caught");
        assert!(
            message.contains("the unlink of sale.order 101 (event 1")
                && message.contains("a create with the same payload is dropped"),
            "{message}"
        );
        // Without a payload a deletion carries nothing to check.
        check_deletions_scoped::<OnlyDeletions>(
            &context(5),
            &[event(1, "sale.order", 7, EventKind::Unlink)],
        );
    }

    #[test]
    fn no_events_or_a_failing_shape_check_nothing_and_fail() {
        let message = failure(|| check_deletions_scoped::<Scoped>(&context(5), &[]))
            .expect("empty input is refused");
        assert!(message.contains("no events"), "{message}");
        let message = failure(|| check_deletions_scoped::<Failing>(&context(5), &events()))
            .expect("a failing shape is refused");
        assert!(message.contains("shape failed"), "{message}");
    }
}
