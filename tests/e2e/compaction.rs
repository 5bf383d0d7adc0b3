//! Retention by compaction (the default): every record's latest state is kept, devices that
//! were offline catch up without a reset, and a device that never pulled reads every record.

use std::time::Duration;

use serde_json::{Value, json};
use smartsync::config::{RetentionConfig, RetentionMode, Span};
use smartsync_tests::{Replica, TestServer, event_ids, session};

/// Feeds read by their model lists: no plugins.toml. The background compactor stays out of
/// the way: the tests compact when they choose.
async fn start() -> TestServer {
    TestServer::start_with(|config| {
        config.plugins.file = config.plugins.file.with_file_name("no-plugins.toml");
        config.retention.interval_secs = 3600;
    })
    .await
}

/// Compaction that folds every change at once, and keeps deletions for `tombstone_ttl`.
fn compact_now(tombstone_ttl: Span) -> RetentionConfig {
    RetentionConfig {
        mode: RetentionMode::Compact,
        compact_after: Span::from_secs(0),
        tombstone_ttl,
        batch_events: 3,
        ..RetentionConfig::default()
    }
}

fn delivery(device: &str, limit: i64) -> Value {
    json!({"user_id": 42, "device_id": device, "app_type": "delivery_app", "limit": limit})
}

/// A picking event with its full payload, as Odoo sends it.
fn picking(id: i64, kind: &str, state: &str, version: i64) -> Value {
    json!({"model": "stock.picking", "record_id": id, "event": kind,
           "payload": {"id": id, "name": format!("WH/OUT/{id:05}"), "state": state,
                       "version": version}})
}

#[tokio::test]
async fn devices_offline_through_compactions_catch_up_without_a_reset() {
    let server = start().await;
    let s = session(42);
    // `watcher` pulls after every change, before anything is compacted: its copy is the truth.
    let mut watcher = Replica::default();
    let mut early = Replica::default();
    let mut partial = Replica::default();
    let mut ingested = 0;
    let mut round = |events: Vec<Value>| {
        ingested += events.len();
        json!(events)
    };

    server
        .ingest_ok(round(
            (1..=5)
                .map(|id| picking(id, "create", "draft", 1))
                .collect(),
        ))
        .await;
    watcher
        .catch_up(&server, &s, &delivery("watcher", 100))
        .await;
    early.catch_up(&server, &s, &delivery("early", 100)).await;
    partial.apply(&server.pull_ok(&s, &delivery("partial", 2)).await);

    server
        .ingest_ok(round(vec![
            picking(1, "write", "assigned", 2),
            picking(2, "write", "assigned", 2),
            picking(3, "unlink", "draft", 2),
            picking(6, "create", "draft", 1),
            picking(6, "write", "assigned", 2),
            picking(7, "create", "draft", 1),
            picking(7, "unlink", "draft", 2),
        ]))
        .await;
    watcher
        .catch_up(&server, &s, &delivery("watcher", 100))
        .await;
    let first = server.compact(&compact_now(Span::from_secs(0))).await;
    assert!(first.folded >= 5, "{first:?}");

    server
        .ingest_ok(round(vec![
            picking(1, "write", "done", 3),
            picking(2, "unlink", "assigned", 3),
            picking(3, "create", "draft", 3),
        ]))
        .await;
    watcher
        .catch_up(&server, &s, &delivery("watcher", 100))
        .await;
    let second = server.compact(&compact_now(Span::from_secs(0))).await;
    assert!(second.folded >= 3, "{second:?}");
    assert_eq!(
        second.tombstones_dropped, 0,
        "tombstones are kept for ever here"
    );

    // Every device ends with the watcher's copy, none of them told to reset.
    let mut fresh = Replica::default();
    for (name, replica) in [
        ("early", &mut early),
        ("partial", &mut partial),
        ("fresh", &mut fresh),
    ] {
        let answers = replica.catch_up(&server, &s, &delivery(name, 2)).await;
        for answer in &answers {
            assert!(answer.get("reset_required").is_none(), "{name}: {answer}");
        }
        assert_eq!(replica.records, watcher.records, "{name}");
    }
    // The device that never pulled read the compacted log: one event per record (the five
    // pickings alive and the deletions of 2 and 7), not the whole history.
    let read: usize = {
        let mut newcomer = Replica::default();
        let answers = newcomer
            .catch_up(&server, &s, &delivery("newcomer", 100))
            .await;
        answers.iter().map(|a| event_ids(a).len()).sum()
    };
    assert_eq!(read, 7, "of {ingested} changes");
    assert_eq!(
        watcher.records.keys().map(|k| k.1).collect::<Vec<_>>(),
        [1, 3, 4, 5, 6]
    );
    // A created-then-written record reads as one create with its latest values.
    let newest = server.pull_ok(&s, &delivery("another", 100)).await;
    let six = newest["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["record_id"] == 6))
        .cloned()
        .expect("picking 6");
    assert_eq!(six["event"], "create", "{six}");
    assert_eq!(six["payload"]["state"], "assigned", "{six}");
    server.stop().await;
}

#[tokio::test]
async fn a_device_whose_unread_deletion_was_dropped_starts_over() {
    let mut server = start().await;
    let s = session(42);
    server
        .ingest_ok(json!([
            picking(1, "create", "draft", 1),
            picking(2, "create", "draft", 1),
            picking(3, "create", "draft", 1),
        ]))
        .await;
    let mut ahead = Replica::default();
    ahead.catch_up(&server, &s, &delivery("ahead", 100)).await;
    let mut late = Replica::default();
    late.apply(&server.pull_ok(&s, &delivery("late", 1)).await);
    server
        .ingest_ok(json!([
            picking(2, "unlink", "draft", 2),
            picking(3, "write", "done", 2)
        ]))
        .await;
    ahead.catch_up(&server, &s, &delivery("ahead", 100)).await;

    // The deletion of picking 2 grows older than the tombstones' time to live, and is dropped
    // with the rest of its record.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let done = server.compact(&compact_now(Span::from_secs(1))).await;
    assert_eq!((done.folded, done.tombstones_dropped), (2, 1), "{done:?}");

    // `late` never read it: the state says so, then its pull resets it to the start of the log,
    // which it reads again whole.
    let state: Value = server
        .state(&s, "user_id=42&device_id=late&app_type=delivery_app")
        .await
        .json()
        .await
        .expect("state");
    assert_eq!(state["reset_required"], true, "{state}");
    assert_eq!(state["reset_reason"], "cursor_too_old", "{state}");
    let reset = server.pull_ok(&s, &delivery("late", 1)).await;
    assert_eq!(reset["reset_reason"], "cursor_too_old", "{reset}");
    assert_eq!(reset["events"], json!([]));
    assert_eq!(reset["has_more"], true);
    late.apply(&reset);
    let answers = late.catch_up(&server, &s, &delivery("late", 1)).await;
    assert!(answers.iter().all(|a| a.get("reset_required").is_none()));
    assert_eq!(late.records, ahead.records);
    assert_eq!(late.records.keys().map(|k| k.1).collect::<Vec<_>>(), [1, 3]);

    // `ahead` had read the deletion: it carries on.
    let fine = server.pull_ok(&s, &delivery("ahead", 100)).await;
    assert!(fine.get("reset_required").is_none(), "{fine}");

    // A device that begins reading after the drop is not reset, though its position lies
    // before the dropped deletion: it could not have held the record. Nor after a restart.
    let first = server.pull_ok(&s, &delivery("newcomer", 1)).await;
    assert!(first.get("reset_required").is_none(), "{first}");
    assert_eq!(event_ids(&first), [1]);
    server.restart().await;
    let mut newcomer = Replica::default();
    newcomer.apply(&first);
    let answers = newcomer
        .catch_up(&server, &s, &delivery("newcomer", 1))
        .await;
    assert!(
        answers.iter().all(|a| a.get("reset_required").is_none()),
        "{answers:?}"
    );
    assert_eq!(newcomer.records, ahead.records);
    server.stop().await;
}

#[tokio::test]
async fn plugin_feeds_read_on_after_deletions_are_dropped_and_across_restarts() {
    // The bundled plugins, sales_app among them.
    let mut server = TestServer::start_with(|config| config.retention.interval_secs = 3600).await;
    let s = session(5);
    let sales = |device: &str| json!({"user_id": 5, "device_id": device, "app_type": "sales_app", "limit": 1});
    let order = |id: i64, kind: &str| {
        json!({"model": "sale.order", "record_id": id, "event": kind,
               "payload": {"id": id, "user_id": 5, "state": "sale"}})
    };
    server
        .ingest_ok(json!([
            order(1, "create"),
            order(2, "create"),
            order(2, "unlink")
        ]))
        .await;
    let mut old = Replica::default();
    old.catch_up(&server, &s, &sales("old")).await;
    assert_eq!(old.records.keys().map(|k| k.1).collect::<Vec<_>>(), [1]);

    // The newest event, a deletion, is dropped.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let done = server.compact(&compact_now(Span::from_secs(1))).await;
    assert_eq!((done.folded, done.tombstones_dropped), (1, 1), "{done:?}");

    // A device that never pulled reads its feed through the plugin, page by page.
    let mut new = Replica::default();
    let answers = new.catch_up(&server, &s, &sales("new")).await;
    assert!(answers.iter().all(|a| a.get("reset_required").is_none()));
    assert_eq!(new.records, old.records);

    // After a restart the log's head is still the dropped deletion's id: devices that read it
    // are not taken for devices of another log, and ids are not given out again.
    server.restart().await;
    let after = server.pull_ok(&s, &sales("old")).await;
    assert!(after.get("reset_required").is_none(), "{after}");
    server.ingest_ok(json!([order(3, "create")])).await;
    let next = server.pull_ok(&s, &sales("old")).await;
    assert_eq!(event_ids(&next), [4]);
    server.stop().await;
}
