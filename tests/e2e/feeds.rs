//! Feeds that converge: records that leave a user's feed are removed from their devices,
//! plugins check their config at load, and plugins built against the contract's first
//! version still serve.

use serde_json::{Value, json};
use smartsync::config::{RetentionConfig, RetentionMode, Span};
use smartsync_tests::{Replica, TestServer, bundled_plugins_toml, plugin_wasm, session};

fn sales(user_id: i64, device: &str) -> Value {
    json!({"user_id": user_id, "device_id": device, "app_type": "sales_app", "limit": 100})
}

/// The bundled plugins, sales_app with `only_own_orders`.
fn own_orders_toml() -> String {
    bundled_plugins_toml().replace(
        "[plugins.delivery_app]",
        "[plugins.sales_app.config]\nonly_own_orders = true\n\n[plugins.delivery_app]",
    )
}

/// An order as Odoo sends it: every field, each time.
fn order(id: i64, kind: &str, salesperson: i64, state: &str) -> Value {
    json!({"model": "sale.order", "record_id": id, "event": kind,
           "payload": {"id": id, "name": format!("S{id:05}"), "user_id": salesperson,
                       "state": state, "amount_total": 100.0}})
}

fn ids_of(replica: &Replica) -> Vec<i64> {
    replica.records.keys().map(|(_, id)| *id).collect()
}

#[tokio::test]
async fn a_reassigned_order_leaves_the_first_salespersons_devices() {
    let server = TestServer::start().await;
    assert_eq!(server.set_plugins(&own_orders_toml()).await.status(), 200);
    server
        .ingest_ok(json!([
            order(1, "create", 5, "draft"),
            order(2, "create", 7, "draft")
        ]))
        .await;
    let (mut five, mut seven) = (Replica::default(), Replica::default());
    five.catch_up(&server, &session(5), &sales(5, "a")).await;
    seven.catch_up(&server, &session(7), &sales(7, "b")).await;
    assert_eq!((ids_of(&five), ids_of(&seven)), (vec![1], vec![2]));

    // The orders swap salespersons.
    server
        .ingest_ok(json!([
            order(1, "write", 7, "draft"),
            order(2, "write", 5, "sale")
        ]))
        .await;
    let answer = server.pull_ok(&session(5), &sales(5, "a")).await;
    let events = answer["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{answer}");
    // Order 1 left 5's feed: an unlink that says why, with nothing of the order.
    assert_eq!(events[0]["record_id"], 1);
    assert_eq!(events[0]["event"], "unlink");
    assert_eq!(events[0]["reason"], "left_feed");
    assert!(events[0].get("payload").is_none(), "{answer}");
    // Order 2 entered it, whole, with the fields that changed (Odoo's payloads do not say).
    assert_eq!(events[1]["record_id"], 2);
    assert_eq!(events[1]["event"], "write");
    assert_eq!(events[1]["payload"]["user_id"], 5);
    assert_eq!(events[1]["changed_fields"], json!(["state", "user_id"]));
    five.apply(&answer);
    seven.catch_up(&server, &session(7), &sales(7, "b")).await;
    assert_eq!((ids_of(&five), ids_of(&seven)), (vec![2], vec![1]));

    // A device that never pulled ends with the same copy.
    let mut fresh = Replica::default();
    fresh.catch_up(&server, &session(5), &sales(5, "new")).await;
    assert_eq!(fresh.records, five.records);
    server.stop().await;
}

#[tokio::test]
async fn a_device_that_read_part_of_a_folded_history_is_told_the_record_left() {
    let server = TestServer::start_with(|config| config.retention.interval_secs = 3600).await;
    assert_eq!(server.set_plugins(&own_orders_toml()).await.status(), 200);
    server
        .ingest_ok(json!([order(1, "create", 5, "draft")]))
        .await;
    let mut five = Replica::default();
    five.catch_up(&server, &session(5), &sales(5, "a")).await;
    assert_eq!(ids_of(&five), vec![1]);
    // Reassigned, then changed again, while 5's device is away; compaction folds the three
    // changes into the last, whose record did not exist before the history began.
    server
        .ingest_ok(json!([
            order(1, "write", 7, "draft"),
            order(1, "write", 7, "sale")
        ]))
        .await;
    let compacted = server
        .compact(&RetentionConfig {
            mode: RetentionMode::Compact,
            compact_after: Span::from_secs(0),
            ..RetentionConfig::default()
        })
        .await;
    assert_eq!(compacted.folded, 2, "{compacted:?}");
    // The device read part of that history: what it holds cannot be told, so it is told the
    // record left its feed.
    let answer = server.pull_ok(&session(5), &sales(5, "a")).await;
    assert_eq!(answer["events"][0]["reason"], "left_feed", "{answer}");
    five.apply(&answer);
    assert!(five.records.is_empty());
    // A device that reads the folded log from the start is not bothered with it.
    let fresh = server.pull_ok(&session(5), &sales(5, "new")).await;
    assert_eq!(fresh["events"], json!([]), "{fresh}");
    server.stop().await;
}

#[tokio::test]
async fn a_config_the_plugin_does_not_know_is_refused_at_reload() {
    let server = TestServer::start().await;
    assert_eq!(server.set_plugins(&own_orders_toml()).await.status(), 200);
    let typo = own_orders_toml().replace("only_own_orders", "only_own_order");
    let response = server.set_plugins(&typo).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["code"], "reload_failed");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("only_own_order") && message.contains("sales_app"),
        "{message}"
    );
    // The running version stays, config and all.
    server
        .ingest_ok(json!([
            order(1, "create", 5, "draft"),
            order(2, "create", 7, "draft")
        ]))
        .await;
    let answer = server.pull_ok(&session(5), &sales(5, "a")).await;
    assert_eq!(
        answer["events"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_built_against_the_first_contract_still_serves() {
    let server = TestServer::start().await;
    let toml = format!(
        "{}[plugins.old]\napp_type = \"old_app\"\nwasm = {:?}\n",
        bundled_plugins_toml(),
        plugin_wasm("contract_0_1").display().to_string()
    );
    let reload = server.set_plugins(&toml).await;
    assert_eq!(
        reload.status(),
        200,
        "{}",
        reload.text().await.unwrap_or_default()
    );
    server
        .ingest_ok(json!([
            order(1, "create", 5, "draft"),
            order(1, "write", 7, "sale")
        ]))
        .await;
    let answer = server
        .pull_ok(
            &session(5),
            &json!({"user_id": 5, "device_id": "a", "app_type": "old_app"}),
        )
        .await;
    let events = answer["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{answer}");
    assert!(
        events
            .iter()
            .all(|e| e["data"] == json!({"contract": "0.1.0"}))
    );
    let admin = server.admin_plugins().await;
    let contract = |app_type: &str| {
        admin["plugins"]
            .as_array()
            .and_then(|plugins| plugins.iter().find(|p| p["app_type"] == app_type))
            .map(|p| p["manifest"]["contract"].clone())
    };
    assert_eq!(contract("old_app"), Some(json!("0.1.0")), "{admin}");
    assert_eq!(contract("sales_app"), Some(json!("0.2.0")), "{admin}");
    server.stop().await;
}

#[tokio::test]
async fn a_first_sync_of_a_compacted_log_brings_no_removals() {
    let server = TestServer::start_with(|config| config.retention.interval_secs = 3600).await;
    assert_eq!(server.set_plugins(&own_orders_toml()).await.status(), 200);
    // Orders of 5 and of 7 in turn, each created then changed.
    let mut history = Vec::new();
    for id in 1..=20 {
        let owner = if id % 2 == 0 { 5 } else { 7 };
        history.push(order(id, "create", owner, "draft"));
    }
    for id in 1..=20 {
        let owner = if id % 2 == 0 { 5 } else { 7 };
        history.push(order(id, "write", owner, "sale"));
    }
    server.ingest_ok(json!(history)).await;
    let compacted = server
        .compact(&RetentionConfig {
            mode: RetentionMode::Compact,
            compact_after: Span::from_secs(0),
            ..RetentionConfig::default()
        })
        .await;
    assert_eq!(compacted.folded, 20, "{compacted:?}");
    // Page by page: every page after the first starts past ids of folded histories, which
    // the device never saw.
    let mut fresh = Replica::default();
    let answers = fresh
        .catch_up(
            &server,
            &session(5),
            &json!({"user_id": 5, "device_id": "new", "app_type": "sales_app", "limit": 1}),
        )
        .await;
    assert!(answers.len() >= 10, "{} pages", answers.len());
    for answer in &answers {
        for event in answer["events"].as_array().expect("events") {
            assert_eq!(event["event"], "create", "{answer}");
        }
    }
    assert_eq!(
        ids_of(&fresh),
        (1..=10).map(|i| i * 2).collect::<Vec<i64>>()
    );
    server.stop().await;
}
