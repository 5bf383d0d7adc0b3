use smartsync_sdk::prelude::*;
use smartsync_sdk::testing::{context, event, with_config, with_payload};

use crate::{Config, Hostile, Mode};

fn events() -> Vec<Event> {
    vec![
        with_payload(
            event(3, "sale.order", 7, EventKind::Create),
            json!({"id": 7, "name": "S00007"}),
        ),
        event(4, "res.partner", 8, EventKind::Write),
        event(9, "stock.picking", 9, EventKind::Unlink),
    ]
}

fn shape(config: Value, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
    Hostile::shape(with_config(context(5), config), events)
}

fn ids(shaped: &[ShapedEvent]) -> Vec<i64> {
    shaped.iter().map(|e| e.id).collect()
}

#[test]
fn manifest_asks_for_every_model_with_payloads() {
    let manifest = Hostile::describe();
    assert_eq!(manifest.name, "hostile");
    assert!(manifest.models.is_empty());
    assert!(manifest.needs_payload);
}

#[test]
fn an_empty_config_passes() {
    let config: Config = parse_config(&context(5)).unwrap();
    assert_eq!(config.mode, Mode::Pass);
    let shaped = shape(json!({}), events()).unwrap();
    let kept: Vec<ShapedEvent> = events()
        .into_iter()
        .map(|e| ShapedEvent::keep(&e))
        .collect();
    assert_eq!(shaped, kept);
}

#[test]
fn pass_keeps_every_event() {
    let shaped = shape(json!({"mode": "pass"}), events()).unwrap();
    assert_eq!(ids(&shaped), [3, 4, 9]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
}

#[test]
fn forged_ids_returns_an_id_past_the_input() {
    let shaped = shape(json!({"mode": "forged_ids"}), events()).unwrap();
    assert_eq!(ids(&shaped), [1009]);
    let shaped = shape(json!({"mode": "forged_ids"}), vec![]).unwrap();
    assert_eq!(ids(&shaped), [1000]);
}

#[test]
fn reordered_reverses_the_events() {
    let shaped = shape(json!({"mode": "reordered"}), events()).unwrap();
    assert_eq!(ids(&shaped), [9, 4, 3]);
}

#[test]
fn error_fails() {
    let err = shape(json!({"mode": "error"}), events()).unwrap_err();
    assert_eq!(err, PluginError::Failed("hostile plugin refuses".into()));
}

#[test]
fn an_unknown_mode_or_key_is_a_bad_config() {
    let err = shape(json!({"mode": "explode"}), events()).unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig(m) if m.contains("explode")),
        "{err:?}"
    );
    let err = shape(json!({"mood": "pass"}), events()).unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig(m) if m.contains("mood")),
        "{err:?}"
    );
}
