use smartsync_sdk::prelude::*;
use smartsync_sdk::serde_json;
use smartsync_sdk::testing::{context, event, with_config, with_payload};

use crate::{Config, DeliveryApp, delivery_status};

const ME: i64 = 42;
const OTHER: i64 = 7;

/// A picking event with the fields `record.read(fields, load=None)` returns.
fn picking(id: i64, kind: EventKind, code: &str, user: Value, state: &str) -> Event {
    with_payload(
        event(id, "stock.picking", 200 + id, kind),
        json!({"id": 200 + id, "name": format!("WH/OUT/{id:05}"), "picking_type_code": code,
               "user_id": user, "x_driver_id": false, "state": state,
               "scheduled_date": "2024-01-15 10:30:00", "partner_id": 3, "company_id": 1}),
    )
}

fn shape(config: Value, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
    FeedPlugin::<DeliveryApp>::shape(with_config(context(ME), config), events)
}

fn ids(shaped: &[ShapedEvent]) -> Vec<i64> {
    shaped.iter().map(|e| e.id).collect()
}

fn data(shaped: &ShapedEvent) -> Option<Value> {
    shaped
        .data
        .as_deref()
        .map(|d| serde_json::from_str(d).unwrap())
}

#[test]
fn manifest_asks_for_pickings_with_payloads() {
    let manifest = DeliveryApp::describe();
    assert_eq!(manifest.name, "delivery_app");
    assert_eq!(manifest.models, ["stock.picking"]);
    assert!(manifest.needs_payload);
}

#[test]
fn an_empty_config_is_the_default() {
    let config: Config = parse_config(&context(ME)).unwrap();
    assert_eq!(config, Config::default());
    assert!(!config.only_outgoing);
    assert!(!config.only_assigned_to_me);
    assert_eq!(config.assignee_field, "user_id");
}

#[test]
fn by_default_every_picking_is_kept_with_its_payload_and_other_models_are_dropped() {
    let events = vec![
        picking(1, EventKind::Create, "incoming", json!(OTHER), "draft"),
        picking(2, EventKind::Write, "outgoing", json!(false), "assigned"),
        event(3, "stock.picking", 9, EventKind::Unlink),
        event(4, "sale.order", 9, EventKind::Create),
        event(5, "stock.picking", 10, EventKind::Write),
    ];
    let shaped = shape(json!({}), events.clone()).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 5]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(shaped[1].payload, PayloadChange::Keep);
    // An event without a payload is kept as it is, still without one.
    assert_eq!(shaped[2].payload, PayloadChange::Keep);
}

#[test]
fn the_state_becomes_a_delivery_status() {
    let states = [
        "assigned",
        "done",
        "cancel",
        "draft",
        "waiting",
        "confirmed",
    ];
    let events = (0..states.len())
        .map(|i| {
            picking(
                i as i64 + 1,
                EventKind::Write,
                "outgoing",
                json!(ME),
                states[i],
            )
        })
        .collect();
    let shaped = shape(json!({}), events).unwrap();
    let statuses: Vec<Value> = shaped.iter().map(|e| data(e).unwrap()).collect();
    assert_eq!(
        statuses,
        [
            json!({"status": "ready"}),
            json!({"status": "delivered"}),
            json!({"status": "cancelled"}),
            json!({"status": "draft"}),
            json!({"status": "waiting"}),
            json!({"status": "confirmed"}),
        ]
    );
    assert_eq!(delivery_status("assigned"), "ready");
}

#[test]
fn no_state_means_no_data() {
    let events = vec![
        event(1, "stock.picking", 9, EventKind::Unlink),
        with_payload(
            event(2, "stock.picking", 9, EventKind::Write),
            json!({"id": 9, "state": false}),
        ),
        with_payload(
            event(3, "stock.picking", 9, EventKind::Write),
            json!({"id": 9}),
        ),
    ];
    let shaped = shape(json!({}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3]);
    assert!(shaped.iter().all(|e| e.data.is_none()));
}

#[test]
fn an_unlink_with_a_state_gets_a_status_too() {
    let events = vec![picking(
        1,
        EventKind::Unlink,
        "outgoing",
        json!(ME),
        "cancel",
    )];
    let shaped = shape(json!({}), events).unwrap();
    assert_eq!(data(&shaped[0]), Some(json!({"status": "cancelled"})));
}

#[test]
fn only_outgoing_keeps_outgoing_pickings_and_unlinks_of_no_known_type() {
    let events = vec![
        picking(1, EventKind::Create, "outgoing", json!(ME), "draft"),
        picking(2, EventKind::Create, "incoming", json!(ME), "draft"),
        picking(3, EventKind::Write, "internal", json!(ME), "assigned"),
        picking(4, EventKind::Write, "outgoing", json!(OTHER), "assigned"),
        with_payload(
            event(5, "stock.picking", 9, EventKind::Write),
            json!({"id": 9, "picking_type_code": false}),
        ),
        event(6, "stock.picking", 9, EventKind::Write),
        event(7, "stock.picking", 9, EventKind::Unlink),
        picking(8, EventKind::Unlink, "incoming", json!(OTHER), "cancel"),
    ];
    let shaped = shape(json!({"only_outgoing": true}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 4, 7]);
}

#[test]
fn only_assigned_to_me_keeps_the_users_pickings_and_unlinks_of_no_known_assignee() {
    let events = vec![
        picking(1, EventKind::Create, "outgoing", json!(ME), "draft"),
        picking(2, EventKind::Write, "outgoing", json!(OTHER), "assigned"),
        picking(
            3,
            EventKind::Write,
            "incoming",
            json!([ME, "Driver"]),
            "assigned",
        ),
        picking(4, EventKind::Write, "outgoing", json!(false), "assigned"),
        event(5, "stock.picking", 9, EventKind::Write),
        event(6, "stock.picking", 9, EventKind::Unlink),
        picking(7, EventKind::Unlink, "outgoing", json!(OTHER), "cancel"),
    ];
    let shaped = shape(json!({"only_assigned_to_me": true}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 3, 6]);
}

/// Deletions as Odoo's "On deletion" webhook may send them: of another type, another driver,
/// this driver's outgoing delivery, and five that do not say.
fn deletions() -> Vec<Event> {
    vec![
        picking(1, EventKind::Unlink, "incoming", json!(ME), "cancel"),
        picking(2, EventKind::Unlink, "outgoing", json!(OTHER), "cancel"),
        picking(
            3,
            EventKind::Unlink,
            "outgoing",
            json!([ME, "Driver"]),
            "done",
        ),
        event(4, "stock.picking", 9, EventKind::Unlink),
        with_payload(
            event(5, "stock.picking", 9, EventKind::Unlink),
            json!({"id": 9, "name": "WH/OUT/9", "state": "done"}),
        ),
        picking(6, EventKind::Unlink, "outgoing", json!(false), "assigned"),
        with_payload(
            event(7, "stock.picking", 9, EventKind::Unlink),
            json!({"id": 9, "picking_type_code": false, "user_id": ME, "state": "done"}),
        ),
        with_payload(event(8, "stock.picking", 9, EventKind::Unlink), json!([ME])),
    ]
}

#[test]
fn only_outgoing_does_not_send_the_deletion_of_another_type() {
    let shaped = shape(json!({"only_outgoing": true}), deletions()).unwrap();
    assert_eq!(ids(&shaped), [2, 3, 4, 5, 6, 7, 8]);
    // Outgoing deliveries whole, with their status, whoever drives them.
    for kept in [&shaped[0], &shaped[1], &shaped[4]] {
        assert_eq!(kept.payload, PayloadChange::Keep, "{kept:?}");
    }
    assert_eq!(data(&shaped[1]), Some(json!({"status": "delivered"})));
    // The type unknown: nothing of the picking.
    for unknown in [&shaped[2], &shaped[3], &shaped[5], &shaped[6]] {
        assert_eq!(unknown.payload, PayloadChange::Drop, "{unknown:?}");
        assert_eq!(unknown.data, None, "{unknown:?}");
    }
}

#[test]
fn only_assigned_to_me_does_not_send_another_drivers_deletion() {
    let shaped = shape(json!({"only_assigned_to_me": true}), deletions()).unwrap();
    assert_eq!(ids(&shaped), [1, 3, 4, 5, 6, 7, 8]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(data(&shaped[0]), Some(json!({"status": "cancelled"})));
    assert_eq!(shaped[1].payload, PayloadChange::Keep);
    assert_eq!(shaped[5].payload, PayloadChange::Keep);
    // The driver unknown: nothing of the picking, not even its status.
    for unknown in [&shaped[2], &shaped[3], &shaped[4], &shaped[6]] {
        assert_eq!(unknown.payload, PayloadChange::Drop, "{unknown:?}");
        assert_eq!(unknown.data, None, "{unknown:?}");
    }
}

#[test]
fn with_both_filters_a_deletion_either_rules_out_is_not_sent() {
    let config = json!({"only_outgoing": true, "only_assigned_to_me": true});
    let mut events = deletions();
    // Of another type, and of no known driver.
    events.push(picking(
        9,
        EventKind::Unlink,
        "internal",
        json!(false),
        "done",
    ));
    let shaped = shape(config, events).unwrap();
    assert_eq!(ids(&shaped), [3, 4, 5, 6, 7, 8]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(data(&shaped[0]), Some(json!({"status": "delivered"})));
    for unknown in &shaped[1..] {
        assert_eq!(unknown.payload, PayloadChange::Drop, "{unknown:?}");
        assert_eq!(unknown.data, None, "{unknown:?}");
    }
}

#[test]
fn the_assignee_field_judges_deletions_too() {
    let driver = |id: i64, driver: Value| {
        with_payload(
            event(id, "stock.picking", 9, EventKind::Unlink),
            json!({"id": 9, "user_id": ME, "x_driver_id": driver, "state": "done"}),
        )
    };
    let events = vec![
        driver(1, json!(ME)),
        driver(2, json!(OTHER)),
        driver(3, json!(false)),
    ];
    let config = json!({"only_assigned_to_me": true, "assignee_field": "x_driver_id"});
    let shaped = shape(config, events).unwrap();
    assert_eq!(ids(&shaped), [1, 3]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(shaped[1].payload, PayloadChange::Drop);
}

#[test]
fn without_filters_every_deletion_is_sent_as_it_is() {
    let shaped = shape(json!({}), deletions()).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Keep));
    assert_eq!(data(&shaped[1]), Some(json!({"status": "cancelled"})));
}

#[test]
fn deletions_reach_no_further_than_creates() {
    let mut events = deletions();
    events.extend([
        picking(11, EventKind::Create, "outgoing", json!(ME), "draft"),
        picking(12, EventKind::Write, "incoming", json!(ME), "assigned"),
        picking(13, EventKind::Write, "outgoing", json!(OTHER), "done"),
        picking(14, EventKind::Write, "outgoing", json!(false), "assigned"),
        with_payload(
            event(15, "stock.picking", 9, EventKind::Write),
            json!({"id": 9, "name": "WH/OUT/9", "state": "done", "x_driver_id": OTHER}),
        ),
        picking(16, EventKind::Write, "internal", json!(false), "cancel"),
        with_payload(
            event(17, "stock.picking", 9, EventKind::Create),
            json!({"id": 9, "picking_type_code": "outgoing", "x_driver_id": ME, "state": "draft"}),
        ),
    ]);
    for config in [
        json!({}),
        json!({"only_outgoing": true}),
        json!({"only_assigned_to_me": true}),
        json!({"only_outgoing": true, "only_assigned_to_me": true}),
        json!({"only_assigned_to_me": true, "assignee_field": "x_driver_id"}),
    ] {
        smartsync_sdk::testing::check_deletions_scoped::<FeedPlugin<DeliveryApp>>(
            &with_config(context(ME), config),
            &events,
        );
    }
}

#[test]
fn assignee_field_names_the_driver_field() {
    let driver = |id: i64, driver: Value| {
        with_payload(
            event(id, "stock.picking", 9, EventKind::Write),
            json!({"id": 9, "user_id": ME, "x_driver_id": driver, "state": "assigned"}),
        )
    };
    let events = vec![
        driver(1, json!(ME)),
        driver(2, json!(OTHER)),
        driver(3, json!(false)),
    ];
    let config = json!({"only_assigned_to_me": true, "assignee_field": "x_driver_id"});
    let shaped = shape(config, events.clone()).unwrap();
    assert_eq!(ids(&shaped), [1]);
    // Without only_assigned_to_me the field changes nothing.
    let shaped = shape(json!({"assignee_field": "x_driver_id"}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3]);
}

#[test]
fn both_filters_together() {
    let events = vec![
        picking(1, EventKind::Write, "outgoing", json!(ME), "assigned"),
        picking(2, EventKind::Write, "incoming", json!(ME), "assigned"),
        picking(3, EventKind::Write, "outgoing", json!(OTHER), "assigned"),
        event(4, "stock.picking", 9, EventKind::Unlink),
    ];
    let shaped = shape(
        json!({"only_outgoing": true, "only_assigned_to_me": true}),
        events,
    )
    .unwrap();
    assert_eq!(ids(&shaped), [1, 4]);
    assert_eq!(data(&shaped[0]), Some(json!({"status": "ready"})));
}

#[test]
fn an_unknown_key_is_a_bad_config_that_names_it() {
    let err = shape(json!({"only_outbound": true}), vec![]).unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig(m) if m.contains("only_outbound")),
        "{err:?}"
    );
}

#[test]
fn a_mistyped_option_is_a_bad_config() {
    let err = shape(json!({"assignee_field": 5}), vec![]).unwrap_err();
    assert!(matches!(err, PluginError::BadConfig(_)), "{err:?}");
}

#[test]
fn answers_are_reusable_as_declared() {
    // The check below has nothing to check without a declaration.
    assert_eq!(
        DeliveryApp::answers_depend_on(),
        Some(vec![ContextField::UserId])
    );
    let events = vec![
        picking(1, EventKind::Create, "outgoing", json!(ME), "assigned"),
        picking(2, EventKind::Write, "incoming", json!(OTHER), "done"),
        picking(3, EventKind::Write, "outgoing", json!(false), "cancel"),
        picking(4, EventKind::Unlink, "outgoing", json!(OTHER), "draft"),
        event(5, "sale.order", 50, EventKind::Create),
        picking(6, EventKind::Unlink, "outgoing", json!(ME), "done"),
        picking(7, EventKind::Unlink, "outgoing", json!(false), "done"),
        event(8, "stock.picking", 80, EventKind::Unlink),
    ];
    for config in [
        json!({}),
        json!({"only_outgoing": true, "only_assigned_to_me": true}),
    ] {
        smartsync_sdk::testing::check_answers_reusable::<FeedPlugin<DeliveryApp>>(
            &with_config(context(ME), config),
            &events,
        );
    }
}
