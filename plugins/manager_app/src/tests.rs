use smartsync_sdk::prelude::*;
use smartsync_sdk::serde_json;
use smartsync_sdk::testing::{context, event, with_config, with_payload};

use crate::{Config, DEFAULT_LABELS, ManagerApp};

/// The manager may see companies 1 and 3.
fn manager() -> Context {
    let mut ctx = context(2);
    ctx.company_ids = vec![1, 3];
    ctx
}

fn shape(config: Value, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
    FeedPlugin::<ManagerApp>::shape(with_config(manager(), config), events)
}

fn ids(shaped: &[ShapedEvent]) -> Vec<i64> {
    shaped.iter().map(|e| e.id).collect()
}

fn label(shaped: &ShapedEvent) -> Option<String> {
    let data: Value = serde_json::from_str(shaped.data.as_deref()?).unwrap();
    Some(data["label"].as_str().unwrap().to_string())
}

fn in_company(id: i64, model: &str, kind: EventKind, company: Value) -> Event {
    with_payload(
        event(id, model, 100 + id, kind),
        json!({"id": 100 + id, "name": "X", "company_id": company, "write_date": "2024-01-15 10:30:00"}),
    )
}

#[test]
fn manifest_asks_for_the_six_models_with_payloads() {
    let manifest = ManagerApp::describe();
    assert_eq!(manifest.name, "manager_app");
    assert_eq!(
        manifest.models,
        [
            "sale.order",
            "res.partner",
            "stock.picking",
            "account.move",
            "hr.expense",
            "product.template"
        ]
    );
    assert!(manifest.needs_payload);
}

#[test]
fn an_empty_config_is_the_default() {
    let config: Config = parse_config(&manager()).unwrap();
    assert_eq!(config, Config::default());
    assert!(config.filter_companies);
    assert_eq!(config.labels.len(), 5);
    assert_eq!(config.labels["stock.picking"], "الشحنات");
}

#[test]
fn every_model_gets_the_seed_dashboards_label_and_products_none() {
    let models = [
        "sale.order",
        "res.partner",
        "stock.picking",
        "account.move",
        "hr.expense",
        "product.template",
    ];
    let events: Vec<Event> = models
        .iter()
        .enumerate()
        .map(|(i, m)| event(i as i64 + 1, m, 7, EventKind::Create))
        .collect();
    let shaped = shape(json!({}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4, 5, 6]);
    let labels: Vec<Option<String>> = shaped.iter().map(label).collect();
    let expected: Vec<Option<String>> = DEFAULT_LABELS
        .iter()
        .map(|(_, l)| Some(l.to_string()))
        .chain([None])
        .collect();
    assert_eq!(labels, expected);
    assert_eq!(label(&shaped[0]).as_deref(), Some("طلبات البيع"));
    assert_eq!(label(&shaped[1]).as_deref(), Some("العملاء"));
    assert_eq!(label(&shaped[3]).as_deref(), Some("الفواتير"));
    assert_eq!(label(&shaped[4]).as_deref(), Some("المصروفات"));
}

#[test]
fn payloads_pass_through_and_other_models_are_dropped() {
    let events = vec![
        in_company(1, "account.move", EventKind::Write, json!(1)),
        event(2, "mrp.production", 7, EventKind::Create),
        in_company(3, "hr.expense", EventKind::Unlink, json!(1)),
    ];
    let shaped = shape(json!({}), events.clone()).unwrap();
    assert_eq!(ids(&shaped), [1, 3]);
    assert_eq!(shaped[0].payload, PayloadChange::Keep);
    assert_eq!(shaped[1].payload, PayloadChange::Keep);
}

#[test]
fn the_admins_labels_are_merged_over_the_defaults() {
    let config = json!({"labels": {"sale.order": "Sales orders", "product.template": "Products", "hr.expense": ""}});
    let events = vec![
        event(1, "sale.order", 7, EventKind::Create),
        event(2, "res.partner", 7, EventKind::Create),
        event(3, "product.template", 7, EventKind::Create),
        event(4, "hr.expense", 7, EventKind::Create),
    ];
    let shaped = shape(config, events).unwrap();
    let labels: Vec<Option<String>> = shaped.iter().map(label).collect();
    assert_eq!(
        labels,
        [
            Some("Sales orders".into()),
            Some("العملاء".into()),
            Some("Products".into()),
            None
        ]
    );
}

#[test]
fn filter_companies_keeps_allowed_and_shared_records_and_unlinks_of_no_known_company() {
    let events = vec![
        in_company(1, "sale.order", EventKind::Create, json!(1)),
        in_company(2, "sale.order", EventKind::Create, json!(2)),
        in_company(3, "account.move", EventKind::Write, json!(3)),
        in_company(4, "account.move", EventKind::Write, json!([2, "Other Co"])),
        in_company(5, "product.template", EventKind::Write, json!(false)),
        with_payload(
            event(6, "res.partner", 7, EventKind::Write),
            json!({"id": 7, "name": "Shared"}),
        ),
        event(7, "stock.picking", 7, EventKind::Write),
        in_company(8, "hr.expense", EventKind::Unlink, json!(2)),
        event(9, "hr.expense", 7, EventKind::Unlink),
        in_company(10, "hr.expense", EventKind::Unlink, json!(3)),
    ];
    let shaped = shape(json!({}), events.clone()).unwrap();
    assert_eq!(ids(&shaped), [1, 3, 5, 6, 7, 9, 10]);
    let shaped = shape(json!({"filter_companies": true}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 3, 5, 6, 7, 9, 10]);
}

#[test]
fn filter_companies_false_keeps_every_company() {
    let events = vec![
        in_company(1, "sale.order", EventKind::Create, json!(1)),
        in_company(2, "sale.order", EventKind::Create, json!(2)),
        in_company(3, "sale.order", EventKind::Unlink, json!(2)),
        with_payload(
            event(4, "sale.order", 7, EventKind::Unlink),
            json!({"id": 7, "name": "X"}),
        ),
    ];
    let shaped = shape(json!({"filter_companies": false}), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Keep));
}

/// A manager whose only company is 1.
fn manager_of_company_1() -> Context {
    let mut ctx = with_config(manager(), json!({}));
    ctx.company_ids = vec![1];
    ctx
}

#[test]
fn another_companys_deletion_is_not_sent() {
    // The record of company 2 as Odoo's "On deletion" webhook sends it.
    let events = vec![
        with_payload(
            event(1, "sale.order", 1, EventKind::Unlink),
            json!({"company_id": 2, "name": "X", "amount_total": 5}),
        ),
        with_payload(
            event(2, "account.move", 2, EventKind::Unlink),
            json!({"id": 2, "company_id": [2, "Other Co"], "name": "INV/2"}),
        ),
    ];
    let shaped = FeedPlugin::<ManagerApp>::shape(manager_of_company_1(), events).unwrap();
    assert!(shaped.is_empty(), "{shaped:?}");
}

#[test]
fn a_deletion_that_does_not_say_its_company_is_sent_without_its_payload() {
    let events = vec![
        event(1, "sale.order", 1, EventKind::Unlink),
        with_payload(
            event(2, "sale.order", 2, EventKind::Unlink),
            json!({"name": "X", "amount_total": 5}),
        ),
        with_payload(
            event(3, "sale.order", 3, EventKind::Unlink),
            json!([2, "X"]),
        ),
        with_payload(
            event(4, "sale.order", 4, EventKind::Unlink),
            json!({"company_id": "two", "name": "X"}),
        ),
    ];
    let shaped = FeedPlugin::<ManagerApp>::shape(manager_of_company_1(), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4]);
    for deleted in &shaped {
        assert_eq!(deleted.payload, PayloadChange::Drop, "{deleted:?}");
        // The label tells the model, nothing of the record.
        assert_eq!(label(deleted).as_deref(), Some("طلبات البيع"));
    }
}

#[test]
fn a_deletion_of_an_allowed_or_shared_record_keeps_its_payload() {
    let events = vec![
        in_company(1, "sale.order", EventKind::Unlink, json!(1)),
        in_company(2, "sale.order", EventKind::Unlink, json!([1, "My Co"])),
        in_company(3, "res.partner", EventKind::Unlink, json!(false)),
        in_company(4, "res.partner", EventKind::Unlink, json!(null)),
    ];
    let shaped = FeedPlugin::<ManagerApp>::shape(manager_of_company_1(), events).unwrap();
    assert_eq!(ids(&shaped), [1, 2, 3, 4]);
    assert!(shaped.iter().all(|e| e.payload == PayloadChange::Keep));
    assert_eq!(label(&shaped[2]).as_deref(), Some("العملاء"));
}

#[test]
fn deletions_reach_no_further_than_creates() {
    let events = vec![
        in_company(1, "sale.order", EventKind::Create, json!(1)),
        in_company(2, "sale.order", EventKind::Write, json!(2)),
        in_company(3, "account.move", EventKind::Write, json!([2, "Other Co"])),
        in_company(4, "res.partner", EventKind::Write, json!(false)),
        with_payload(
            event(5, "res.partner", 5, EventKind::Write),
            json!({"id": 5, "name": "No company"}),
        ),
        in_company(6, "sale.order", EventKind::Unlink, json!(1)),
        in_company(7, "hr.expense", EventKind::Unlink, json!(2)),
        in_company(8, "hr.expense", EventKind::Unlink, json!(false)),
        with_payload(
            event(9, "hr.expense", 9, EventKind::Unlink),
            json!({"id": 9, "name": "Taxi"}),
        ),
        event(10, "stock.picking", 10, EventKind::Unlink),
        in_company(11, "crm.lead", EventKind::Write, json!(2)),
    ];
    let no_companies = {
        let mut ctx = manager();
        ctx.company_ids.clear();
        ctx
    };
    for ctx in [manager(), manager_of_company_1(), no_companies] {
        for config in [
            json!({}),
            json!({"filter_companies": true, "labels": {"hr.expense": ""}}),
            json!({"filter_companies": false}),
        ] {
            smartsync_sdk::testing::check_deletions_scoped::<FeedPlugin<ManagerApp>>(
                &with_config(ctx.clone(), config),
                &events,
            );
        }
    }
}

#[test]
fn a_user_without_companies_sees_only_shared_records() {
    let mut ctx = with_config(manager(), json!({}));
    ctx.company_ids.clear();
    let events = vec![
        in_company(1, "sale.order", EventKind::Create, json!(1)),
        in_company(2, "product.template", EventKind::Create, json!(false)),
    ];
    let shaped = FeedPlugin::<ManagerApp>::shape(ctx, events).unwrap();
    assert_eq!(ids(&shaped), [2]);
}

#[test]
fn an_unknown_key_is_a_bad_config_that_names_it() {
    let err = shape(json!({"label": {}}), vec![]).unwrap_err();
    assert!(
        matches!(&err, PluginError::BadConfig(m) if m.contains("unknown field `label`")),
        "{err:?}"
    );
}

#[test]
fn a_mistyped_option_is_a_bad_config() {
    let err = shape(json!({"labels": {"sale.order": 5}}), vec![]).unwrap_err();
    assert!(matches!(err, PluginError::BadConfig(_)), "{err:?}");
    let err = shape(json!({"filter_companies": "no"}), vec![]).unwrap_err();
    assert!(matches!(err, PluginError::BadConfig(_)), "{err:?}");
}

#[test]
fn answers_are_reusable_as_declared() {
    // The check below has nothing to check without a declaration.
    assert_eq!(
        ManagerApp::answers_depend_on(),
        Some(vec![ContextField::CompanyIds])
    );
    let events = vec![
        in_company(1, "sale.order", EventKind::Create, json!(1)),
        in_company(2, "account.move", EventKind::Write, json!(2)),
        in_company(3, "res.partner", EventKind::Write, json!(false)),
        in_company(4, "hr.expense", EventKind::Unlink, json!(2)),
        in_company(5, "product.template", EventKind::Create, json!(3)),
        event(6, "crm.lead", 60, EventKind::Create),
        in_company(7, "hr.expense", EventKind::Unlink, json!(1)),
        event(8, "sale.order", 80, EventKind::Unlink),
    ];
    for config in [
        json!({}),
        json!({"filter_companies": false, "labels": {"sale.order": "Orders"}}),
    ] {
        smartsync_sdk::testing::check_answers_reusable::<FeedPlugin<ManagerApp>>(
            &with_config(manager(), config),
            &events,
        );
    }
}
