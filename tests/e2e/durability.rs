//! Nothing acknowledged is lost: restarts keep events, positions and tokens.

use serde_json::{Value, json};
use smartsync_tests::{TestServer, event_ids, item, session};

fn sales(device: &str) -> Value {
    json!({"user_id": 5, "device_id": device, "app_type": "sales_app", "limit": 3})
}

#[tokio::test]
async fn a_restart_keeps_events_positions_and_tokens() {
    let mut server = TestServer::start().await;
    server
        .ingest_ok(json!(
            (1..=6)
                .map(|i| item("sale.order", i, "write"))
                .collect::<Vec<_>>()
        ))
        .await;
    let first = server.pull_ok(&session(5), &sales("a")).await;
    assert_eq!(event_ids(&first), vec![1, 2, 3]);
    let token = first["next_sync_token"].clone();

    server.restart().await;

    // Ids continue after the restart, never reusing one.
    let more = server
        .ingest_ok(json!([item("sale.order", 7, "write")]))
        .await;
    assert_eq!(more, vec![7]);
    let second = server.pull_ok(&session(5), &sales("a")).await;
    assert_eq!(
        event_ids(&second),
        vec![4, 5, 6],
        "position survived the restart"
    );
    let state: Value = server
        .state(&session(5), "user_id=5&device_id=a")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(state["sync_count"], 2);
    // Tokens issued before the restart still verify.
    let mut resume = sales("a");
    resume["sync_token"] = token;
    assert_eq!(
        event_ids(&server.pull_ok(&session(5), &resume).await),
        vec![4, 5, 6]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restart_with_a_small_tail_serves_old_positions_from_the_database() {
    let mut server = TestServer::start_with(|c| c.database.tail_events = 2).await;
    server
        .ingest_ok(json!(
            (1..=9)
                .map(|i| item("sale.order", i, "write"))
                .collect::<Vec<_>>()
        ))
        .await;
    server.restart().await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(event_ids(&server.pull_ok(&session(5), &sales("a")).await));
    }
    assert_eq!(seen, (1..=9).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn webhooks_in_flight_during_shutdown_are_kept_or_refused_never_lost() {
    let mut server = TestServer::start().await;
    let url = format!(
        "{}?token={}&event=write",
        server.url("/api/v2/webhooks/odoo"),
        smartsync_tests::INGEST_TOKEN
    );
    let mut tasks = Vec::new();
    for i in 1..=100 {
        let client = server.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"_model": "sale.order", "_id": i, "_action": "x(#1)"});
            match client.post(url).json(&body).send().await {
                Ok(response) if response.status() == 200 => Some(i),
                _ => None,
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    server.restart().await;
    let mut acknowledged = Vec::new();
    for task in tasks {
        if let Some(i) = task.await.expect("task") {
            acknowledged.push(i);
        }
    }
    let answer = server
        .pull_ok(
            &session(2),
            &json!({"user_id": 2, "device_id": "audit", "app_type": "manager_app", "limit": 1000}),
        )
        .await;
    let stored: Vec<i64> = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["record_id"].as_i64().expect("record id"))
        .collect();
    for i in &acknowledged {
        assert!(stored.contains(i), "acknowledged webhook {i} was lost");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_device_ahead_of_a_replaced_log_is_told_to_reset() {
    let old = TestServer::start().await;
    old.ingest_ok(json!(
        (1..=5)
            .map(|i| item("sale.order", i, "write"))
            .collect::<Vec<_>>()
    ))
    .await;
    let answer = old.pull_ok(&session(5), &sales("a")).await;
    let token = answer["next_sync_token"].clone();
    old.stop().await;

    // A new, empty database behind the same token secret: the token points past its head.
    let new = TestServer::start().await;
    new.ingest_ok(json!([item("sale.order", 77, "create")]))
        .await;
    let mut resume = sales("a");
    resume["sync_token"] = token;
    let reset = new.pull_ok(&session(5), &resume).await;
    assert_eq!(reset["reset_required"], true);
    assert_eq!(reset["reset_reason"], "cursor_ahead");
    assert_eq!(reset["events"], json!([]));
    // The device reads the new log from its start (it holds every record's latest state), and
    // later pulls are normal.
    assert_eq!(reset["has_more"], true);
    new.ingest_ok(json!([item("sale.order", 78, "create")]))
        .await;
    let next = new.pull_ok(&session(5), &sales("a")).await;
    assert_eq!(event_ids(&next), vec![1, 2]);
    assert!(next.get("reset_required").is_none());
    new.stop().await;
}
