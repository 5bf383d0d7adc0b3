//! Retention by pruning (`retention.mode = "prune"`): old events are deleted, and a device left
//! behind is told to reset (`cursor_too_old`), never handed a log with a hole in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use smartsync::config::{RetentionConfig, RetentionMode, Span};
use smartsync_tests::{TestServer, event_ids, item, session};

/// Feeds read by their model lists: no plugins.toml. The log is pruned.
async fn start_without_plugins(adjust: impl FnOnce(&mut smartsync::Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.plugins.file = config.plugins.file.with_file_name("no-plugins.toml");
        config.retention.mode = RetentionMode::Prune;
        adjust(config);
    })
    .await
}

fn keep_newest(n: u64) -> RetentionConfig {
    RetentionConfig {
        mode: RetentionMode::Prune,
        max_age: Span::from_secs(0),
        max_events: n,
        interval_secs: 60,
        batch_events: 4,
        ..RetentionConfig::default()
    }
}

fn delivery(device: &str, limit: i64) -> Value {
    json!({"user_id": 42, "device_id": device, "app_type": "delivery_app", "limit": limit})
}

fn pickings(ids: std::ops::Range<i64>) -> Value {
    Value::Array(ids.map(|id| item("stock.picking", id, "create")).collect())
}

async fn state(server: &TestServer, device: &str) -> Value {
    let response = server
        .state(
            &session(42),
            &format!("user_id=42&device_id={device}&app_type=delivery_app"),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("state is JSON")
}

#[tokio::test]
async fn devices_behind_the_pruned_events_reset_and_carry_on() {
    let mut server = start_without_plugins(|_| {}).await;
    server.ingest_ok(pickings(1..21)).await;
    let up = server.pull_ok(&session(42), &delivery("up", 100)).await;
    assert_eq!(event_ids(&up).len(), 20);
    let behind = server.pull_ok(&session(42), &delivery("behind", 5)).await;
    assert_eq!(event_ids(&behind), vec![1, 2, 3, 4, 5]);
    let old_token = behind["next_sync_token"].clone();
    assert_eq!(state(&server, "behind").await["reset_required"], false);

    let pruned = server.prune(&keep_newest(5)).await;
    assert_eq!(pruned.through, 15);
    assert_eq!(pruned.deleted, 15);

    // The state says so before the device pulls.
    let before = state(&server, "behind").await;
    assert_eq!(before["reset_required"], true, "{before}");
    assert_eq!(before["reset_reason"], "cursor_too_old");
    assert_eq!(before["pending_events"], 5);
    let fine = state(&server, "up").await;
    assert_eq!(fine["reset_required"], false, "{fine}");
    assert!(fine.get("reset_reason").is_none(), "{fine}");

    // Told once, with no events and a token at the head...
    let reset = server.pull_ok(&session(42), &delivery("behind", 5)).await;
    assert_eq!(reset["reset_required"], true, "{reset}");
    assert_eq!(reset["reset_reason"], "cursor_too_old");
    assert_eq!(reset["events"], json!([]));
    assert_eq!(reset["has_more"], false);
    let at_head = reset["next_sync_token"].clone();
    // ...then carries on from there.
    server.ingest_ok(pickings(21..23)).await;
    let next = server.pull_ok(&session(42), &delivery("behind", 5)).await;
    assert!(next.get("reset_required").is_none(), "{next}");
    assert_eq!(event_ids(&next), vec![21, 22]);

    // An up-to-date device is not disturbed.
    let up = server.pull_ok(&session(42), &delivery("up", 100)).await;
    assert!(up.get("reset_required").is_none(), "{up}");
    assert_eq!(event_ids(&up), vec![21, 22]);

    // A device that never pulled cannot get the beginning of the log any more.
    let new = server.pull_ok(&session(42), &delivery("new", 100)).await;
    assert_eq!(new["reset_reason"], "cursor_too_old", "{new}");

    // What was pruned stays pruned across a restart: a token from before still resets, and the
    // token handed out with the reset still reads on.
    server.restart().await;
    let mut with_token = delivery("behind", 5);
    with_token["sync_token"] = old_token;
    let again = server.pull_ok(&session(42), &with_token).await;
    assert_eq!(again["reset_reason"], "cursor_too_old", "{again}");
    with_token["sync_token"] = at_head;
    let resumed = server.pull_ok(&session(42), &with_token).await;
    assert!(resumed.get("reset_required").is_none(), "{resumed}");
    assert_eq!(event_ids(&resumed), vec![21, 22]);
    server.stop().await;
}

#[tokio::test]
async fn the_background_pruner_keeps_the_newest_events() {
    let server = start_without_plugins(|config| {
        config.retention = RetentionConfig {
            interval_secs: 1,
            ..keep_newest(3)
        };
    })
    .await;
    server.ingest_ok(pickings(1..3)).await;
    server.pull_ok(&session(42), &delivery("d", 100)).await;
    server.ingest_ok(pickings(3..13)).await;
    let mut waited = Duration::ZERO;
    loop {
        let state = state(&server, "d").await;
        if state["reset_required"] == true {
            assert_eq!(state["reset_reason"], "cursor_too_old", "{state}");
            assert_eq!(state["pending_events"], 3, "{state}");
            break;
        }
        assert!(waited < Duration::from_secs(10), "never pruned: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    let reset = server.pull_ok(&session(42), &delivery("d", 100)).await;
    assert_eq!(reset["reset_reason"], "cursor_too_old", "{reset}");
    server.stop().await;
}

#[tokio::test]
async fn events_older_than_max_age_are_pruned() {
    let server = start_without_plugins(|_| {}).await;
    server.ingest_ok(pickings(1..4)).await;
    let by_age = RetentionConfig {
        max_age: Span::from_secs(1),
        ..keep_newest(0)
    };
    assert_eq!(server.prune(&by_age).await.deleted, 0, "nothing is old yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.ingest_ok(pickings(4..6)).await;
    let pruned = server.prune(&by_age).await;
    assert_eq!((pruned.through, pruned.deleted), (3, 3));
    let new = server.pull_ok(&session(42), &delivery("new", 100)).await;
    assert_eq!(new["reset_reason"], "cursor_too_old", "{new}");
    server.stop().await;
}

/// Devices read while events are ingested and pruned: every page either follows the previous
/// one with no gap, or is a reset. (The narrow race of a read overtaken by a delete is pinned
/// down deterministically by `log::tests::a_scan_overtaken_by_pruning_says_so`.)
#[tokio::test]
async fn pruning_under_load_never_leaves_a_silent_gap() {
    // A short in-memory tail: most reads go to the database, where a read and a delete can
    // interleave.
    let server = Arc::new(start_without_plugins(|config| config.database.tail_events = 8).await);
    const TOTAL: i64 = 3000;
    let ingested = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (server, ingested) = (server.clone(), ingested.clone());
        tokio::spawn(async move {
            for start in (1..=TOTAL).step_by(20) {
                server.ingest_ok(pickings(start..start + 20)).await;
            }
            ingested.store(true, Ordering::SeqCst);
        })
    };
    let pruner = {
        let server = server.clone();
        tokio::spawn(async move {
            let keep = keep_newest(60);
            loop {
                server.prune(&keep).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut devices = Vec::new();
    for d in 0..4 {
        let (server, ingested) = (server.clone(), ingested.clone());
        devices.push(tokio::spawn(async move {
            let device = format!("device-{d}");
            let (mut pages, mut resets) = (0, 0);
            let mut last: Option<i64> = None;
            loop {
                // Device 0 is slow: it falls behind what is kept, and must be told.
                if d == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let done = ingested.load(Ordering::SeqCst);
                let answer = server.pull_ok(&session(42), &delivery(&device, 5)).await;
                let ids = event_ids(&answer);
                if answer["reset_required"] == true {
                    assert_eq!(answer["reset_reason"], "cursor_too_old", "{answer}");
                    assert!(ids.is_empty());
                    resets += 1;
                    last = None;
                    continue;
                }
                if let (Some(last), Some(first)) = (last, ids.first()) {
                    assert_eq!(*first, last + 1, "{device}: a gap after event {last}");
                }
                for pair in ids.windows(2) {
                    assert_eq!(pair[1], pair[0] + 1, "{device}: a gap inside a page");
                }
                if let Some(&end) = ids.last() {
                    pages += 1;
                    last = Some(end);
                }
                if done && answer["has_more"] == false {
                    return (pages, resets);
                }
            }
        }));
    }
    ingest.await.expect("ingest");
    let (mut pages, mut resets) = (0, 0);
    for device in devices {
        let (p, r) = device.await.expect("device");
        pages += p;
        resets += r;
    }
    pruner.abort();
    // Both paths ran: pages that followed on, and devices that fell behind and reset.
    assert!(pages > 0 && resets > 0, "pages {pages}, resets {resets}");
}
