use smartsync_sdk::prelude::*;
use smartsync_sdk::testing::{context, event, with_config, with_payload};

use crate::{Config, SalesApp};

const ME: i64 = 5;
const OTHER: i64 = 9;

fn ids(shaped: &[ShapedEvent]) -> Vec<i64> {
    shaped.iter().map(|e| e.id).collect()
}

fn order(id: i64, kind: EventKind, salesperson: Value) -> Event {
    with_payload(
        event(id, "sale.order", 100 + id, kind),
        json!({"id": 100 + id, "name": format!("S{id:05}"), "user_id": salesperson,
               "partner_id": 3, "amount_total": 120.5, "state": "sale"}),
    )
}

/// The payload `shaped` carries, parsed.
fn payload(shaped: &ShapedEvent) -> Value {
    shaped.replaced_payload().unwrap()
}

fn shape(config: Value, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
    FeedPlugin::<SalesApp>::shape(with_config(context(ME), config), events)
}

#[test]
fn manifest_names_the_seed_models_and_asks_for_payloads() {
    let manifest = SalesApp::describe();
    assert_eq!(manifest.name, "sales_app");
    assert_eq!(
        manifest.models,
        ["sale.order", "res.partner", "product.template"]
    );
    assert!(manifest.needs_payload);
}

#[test]
fn an_empty_config_is_the_default() {
    let config: Config = parse_config(&context(ME)).unwrap();
    assert_eq!(config, Config::default());
    assert!(!config.only_own_orders);
    assert_eq!(config.fields, None);
}

#[test]
fn by_default_every_order_customer_and_product_event_is_kept() {
    let events = vec![
        order(1, EventKind::Create, json!(OTHER)),
        order(2, EventKind::Write, json!(ME)),
        event(3, "sale.order", 7, EventKind::Unlink),
        event(4, "res.partner", 8, EventKind::Create),
        event(5, "res.partner", 8, EventKind::Write),
        event(6, "res.partner", 8, EventKind::Unlink),
        event(7, "product.template", 9, EventKind::Create),
        event(8, "product.template", 9, EventKind::Write),
        event(9, "product.template", 9, EventKind::Unlink),
        event(10, "stock.picking", 10, EventKind::Create),
    ];
    let shaped = shape(json!({}), events.clone()).unwrap();
    // Deletions of customers and products too: a client that keeps them deletes its copy, the
    // seed's sales app ignores them.
    assert_eq!(ids(&shaped), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Payloads pass through untouched and no data is added.
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(shaped[2].payload, PayloadChange::Keep);
    assert!(shaped.iter().all(|e| e.data.is_none()));
}

#[test]
fn only_own_orders_keeps_the_users_orders() {
    let events = vec![
        order(1, EventKind::Create, json!(ME)),
        order(2, EventKind::Create, json!(OTHER)),
        order(3, EventKind::Write, json!(ME)),
        order(4, EventKind::Write, json!(OTHER)),
        // A many2one read with its name.
        order(5, EventKind::Write, json!([ME, "Mitchell Admin"])),
        order(6, EventKind::Unlink, json!(ME)),
        // Another salesperson's deletion is theirs.
        order(7, EventKind::Unlink, json!(OTHER)),
    ];
    let shaped = shape(json!({"only_own_orders": true}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 3, 5, 6]);
}

#[test]
fn only_own_orders_keeps_unattributed_order_events_only_for_unlink_and_without_payload() {
    let events = vec![
        event(1, "sale.order", 7, EventKind::Create),
        event(2, "sale.order", 7, EventKind::Write),
        event(3, "sale.order", 7, EventKind::Unlink),
        order(4, EventKind::Write, json!(false)),
        order(5, EventKind::Unlink, json!(false)),
        with_payload(
            event(6, "sale.order", 7, EventKind::Write),
            json!({"id": 7}),
        ),
        with_payload(
            event(7, "sale.order", 7, EventKind::Unlink),
            json!({"id": 7}),
        ),
        // A payload that is not an object counts as none.
        with_payload(event(8, "sale.order", 7, EventKind::Write), json!([1, 2])),
        with_payload(event(9, "sale.order", 7, EventKind::Unlink), json!([1, 2])),
    ];
    let shaped = shape(json!({"only_own_orders": true}), events).unwrap();
    assert_eq!(ids(&shaped), [3, 5, 7, 9]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Drop));
}

#[test]
fn only_own_orders_does_not_send_another_salespersons_deletion() {
    let events = vec![
        with_payload(
            event(1, "sale.order", 1, EventKind::Unlink),
            json!({"user_id": OTHER, "name": "X", "amount_total": 5}),
        ),
        order(2, EventKind::Unlink, json!([OTHER, "Marc Demo"])),
    ];
    let shaped = shape(json!({"only_own_orders": true}), events).unwrap();
    assert!(shaped.is_empty(), "{shaped:?}");
}

#[test]
fn only_own_orders_sends_a_deletion_that_names_no_salesperson_without_its_payload() {
    let events = vec![
        event(1, "sale.order", 1, EventKind::Unlink),
        with_payload(
            event(2, "sale.order", 2, EventKind::Unlink),
            json!({"name": "X", "amount_total": 5}),
        ),
        order(3, EventKind::Unlink, json!(false)),
        order(4, EventKind::Unlink, json!(null)),
    ];
    for config in [
        json!({"only_own_orders": true}),
        json!({"only_own_orders": true, "fields": ["name", "amount_total"]}),
    ] {
        let shaped = shape(config, events.clone()).unwrap();
        assert_eq!(ids(&shaped), [1, 2, 3, 4]);
        assert!(
            shaped.iter().all(|e| e.payload == PayloadChange::Drop),
            "{shaped:?}"
        );
    }
}

#[test]
fn only_own_orders_sends_the_users_own_deletion_with_its_payload() {
    let events = vec![order(1, EventKind::Unlink, json!(ME))];
    let shaped = shape(json!({"only_own_orders": true}), events.clone()).unwrap();
    assert_eq!(ids(&shaped), [1]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    let shaped = shape(json!({"only_own_orders": true, "fields": ["name"]}), events).unwrap();
    assert_eq!(payload(&shaped[0]), json!({"id": 101, "name": "S00001"}));
}

#[test]
fn only_own_orders_leaves_customers_and_products_alone() {
    let events = vec![
        with_payload(
            event(1, "res.partner", 8, EventKind::Write),
            json!({"id": 8, "user_id": OTHER}),
        ),
        event(2, "product.template", 9, EventKind::Create),
        event(3, "res.partner", 8, EventKind::Unlink),
    ];
    let shaped = shape(json!({"only_own_orders": true}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3]);
}

#[test]
fn only_own_orders_false_keeps_everyones_orders() {
    let events = vec![
        order(1, EventKind::Create, json!(OTHER)),
        event(2, "sale.order", 7, EventKind::Write),
        order(3, EventKind::Unlink, json!(OTHER)),
        with_payload(
            event(4, "sale.order", 7, EventKind::Unlink),
            json!({"id": 7, "name": "S7"}),
        ),
    ];
    let shaped = shape(json!({"only_own_orders": false}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Keep));
}

#[test]
fn deletions_reach_no_further_than_creates() {
    let events = vec![
        order(1, EventKind::Create, json!(ME)),
        order(2, EventKind::Write, json!(OTHER)),
        order(3, EventKind::Write, json!(false)),
        with_payload(
            event(4, "sale.order", 7, EventKind::Write),
            json!({"id": 7, "name": "S7", "amount_total": 5}),
        ),
        with_payload(event(5, "sale.order", 7, EventKind::Write), json!([1, 2])),
        order(6, EventKind::Unlink, json!(ME)),
        order(7, EventKind::Unlink, json!([OTHER, "Marc Demo"])),
        order(8, EventKind::Unlink, json!(null)),
        with_payload(
            event(9, "sale.order", 9, EventKind::Unlink),
            json!({"id": 9, "name": "S9"}),
        ),
        event(10, "sale.order", 10, EventKind::Unlink),
        with_payload(
            event(11, "res.partner", 11, EventKind::Write),
            json!({"id": 11, "name": "Azure", "user_id": OTHER}),
        ),
        with_payload(
            event(12, "product.template", 12, EventKind::Unlink),
            json!({"id": 12, "name": "Desk"}),
        ),
    ];
    for config in [
        json!({}),
        json!({"fields": ["name"]}),
        json!({"only_own_orders": true}),
        json!({"only_own_orders": true, "fields": ["name", "user_id"]}),
    ] {
        smartsync_sdk::testing::check_deletions_scoped::<FeedPlugin<SalesApp>>(
            &with_config(context(ME), config),
            &events,
        );
    }
}

#[test]
fn fields_trims_payloads_and_always_keeps_id() {
    let events = vec![
        order(1, EventKind::Create, json!(ME)),
        with_payload(
            event(2, "res.partner", 8, EventKind::Write),
            json!({"id": 8, "name": "Azure Interior", "email": "azure@example.com", "phone": false}),
        ),
    ];
    let shaped = shape(
        json!({"fields": ["name", "state", "phone", "missing"]}),
        events,
    )
    .unwrap();
    assert_eq!(ids(&shaped), [1, 2]);
    assert_eq!(
        payload(&shaped[0]),
        json!({"id": 101, "name": "S00001", "state": "sale"})
    );
    assert_eq!(
        payload(&shaped[1]),
        json!({"id": 8, "name": "Azure Interior", "phone": false})
    );
}

#[test]
fn fields_naming_id_keeps_it_once() {
    let events = vec![order(1, EventKind::Create, json!(ME))];
    let shaped = shape(json!({"fields": ["id", "name"]}), events).unwrap();
    assert_eq!(payload(&shaped[0]), json!({"id": 101, "name": "S00001"}));
}

#[test]
fn an_empty_fields_list_keeps_only_id() {
    let events = vec![order(1, EventKind::Create, json!(ME))];
    let shaped = shape(json!({"fields": []}), events).unwrap();
    assert_eq!(payload(&shaped[0]), json!({"id": 101}));
}

#[test]
fn fields_leaves_events_without_an_object_payload_without_one() {
    let events = vec![
        event(1, "sale.order", 7, EventKind::Unlink),
        with_payload(
            event(2, "res.partner", 8, EventKind::Write),
            json!("not an object"),
        ),
    ];
    let shaped = shape(json!({"fields": ["name"]}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Drop));
}

#[test]
fn both_options_together_filter_then_trim() {
    let events = vec![
        order(1, EventKind::Create, json!(ME)),
        order(2, EventKind::Create, json!(OTHER)),
    ];
    let shaped = shape(
        json!({"only_own_orders": true, "fields": ["user_id"]}),
        events,
    )
    .unwrap();
    assert_eq!(ids(&shaped), [1]);
    assert_eq!(payload(&shaped[0]), json!({"id": 101, "user_id": ME}));
}

#[test]
fn an_unknown_key_is_a_bad_config_that_names_it() {
    let err = shape(json!({"only_own_order": true}), vec![]).unwrap_err();
    match err {
        PluginError::BadConfig(message) => assert!(message.contains("only_own_order"), "{message}"),
        other => panic!("expected BadConfig, got {other:?}"),
    }
}

#[test]
fn a_mistyped_option_is_a_bad_config() {
    let err = shape(json!({"fields": "name"}), vec![]).unwrap_err();
    assert!(matches!(err, PluginError::BadConfig(_)), "{err:?}");
    let err = shape(json!({"only_own_orders": "yes"}), vec![]).unwrap_err();
    assert!(matches!(err, PluginError::BadConfig(_)), "{err:?}");
}

#[test]
fn answers_are_reusable_as_declared() {
    // The check below has nothing to check without a declaration.
    assert_eq!(
        SalesApp::answers_depend_on(),
        Some(vec![ContextField::UserId])
    );
    let events = vec![
        order(1, EventKind::Create, json!(ME)),
        order(2, EventKind::Write, json!(OTHER)),
        order(3, EventKind::Unlink, json!(false)),
        event(4, "res.partner", 40, EventKind::Create),
        event(5, "product.template", 50, EventKind::Unlink),
        event(6, "stock.picking", 60, EventKind::Create),
        order(7, EventKind::Unlink, json!(OTHER)),
        order(8, EventKind::Unlink, json!(ME)),
    ];
    for config in [
        json!({}),
        json!({"only_own_orders": true}),
        json!({"only_own_orders": true, "fields": ["name", "user_id"]}),
    ] {
        smartsync_sdk::testing::check_answers_reusable::<FeedPlugin<SalesApp>>(
            &with_config(context(ME), config),
            &events,
        );
    }
}

#[test]
fn an_order_reassigned_away_leaves_the_salespersons_feed() {
    use smartsync_sdk::testing::with_prior;
    let config = json!({"only_own_orders": true});
    let reassigned = with_prior(
        order(1, EventKind::Write, json!(OTHER)),
        Some(json!({"user_id": ME})),
    );
    let shaped = shape(config.clone(), vec![reassigned]).unwrap();
    assert_eq!(ids(&shaped), [1]);
    assert!(shaped[0].removal, "{shaped:?}");
    // The new salesperson receives it.
    let theirs = FeedPlugin::<SalesApp>::shape(
        with_config(context(OTHER), config.clone()),
        vec![with_prior(
            order(1, EventKind::Write, json!(OTHER)),
            Some(json!({"user_id": ME})),
        )],
    )
    .unwrap();
    assert_eq!(ids(&theirs), [1]);
    assert!(!theirs[0].removal);
    // Customers and products never leave the feed.
    let customer = with_prior(
        with_payload(
            event(2, "res.partner", 8, EventKind::Write),
            json!({"id": 8}),
        ),
        None,
    );
    let shaped = shape(config, vec![customer]).unwrap();
    assert!(!shaped[0].removal);
}
