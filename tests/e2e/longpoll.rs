//! Long-poll: `"wait": seconds` holds a pull until an event for its feed arrives.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync_tests::{TestServer, event_ids, item, session};

fn delivery(device: &str, wait: f64) -> Value {
    json!({"user_id": 42, "device_id": device, "app_type": "delivery_app", "limit": 50, "wait": wait})
}

fn spawn_pull(server: &TestServer, body: Value) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let client = server.client.clone();
    let url = server.url("/api/v2/sync/pull");
    tokio::spawn(async move {
        let started = Instant::now();
        let response = client
            .post(url)
            .header("X-Session-Id", "session-42")
            .json(&body)
            .send()
            .await
            .expect("pull");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.expect("json"),
            started.elapsed(),
        )
    })
}

#[tokio::test]
async fn a_waiting_pull_returns_empty_when_the_wait_ends() {
    let server = TestServer::start().await;
    let (status, answer, took) = spawn_pull(&server, delivery("d", 0.3)).await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["has_updates"], false);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_waiting_pull_wakes_for_its_models_only() {
    let server = TestServer::start().await;
    let waiting = spawn_pull(&server, delivery("driver", 10.0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An order is not for the delivery feed: the driver keeps waiting.
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "answered on an event it does not receive"
    );
    let sent = Instant::now();
    server
        .ingest_ok(json!([item("stock.picking", 2, "create")]))
        .await;
    let (status, answer, took) = waiting.await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(event_ids(&answer), vec![2]);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?} from ingest to answer",
        sent.elapsed()
    );
    // The order was scanned past too: the next pull has nothing.
    let next = server.pull_ok(&session(42), &delivery("driver", 0.0)).await;
    assert_eq!(next["events"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn many_waiters_all_get_the_event() {
    let server = TestServer::start().await;
    let waiters: Vec<_> = (0..200)
        .map(|i| spawn_pull(&server, delivery(&format!("rn-{i}"), 10.0)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .ingest_ok(json!([item("stock.picking", 9, "write")]))
        .await;
    for waiter in waiters {
        let (status, answer, _) = waiter.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(event_ids(&answer), vec![1]);
    }
    server.stop().await;
}

#[tokio::test]
async fn waits_are_capped_and_checked() {
    let server = TestServer::start_with(|c| c.sync.max_wait_secs = 1).await;
    let (status, _, took) = spawn_pull(&server, delivery("d", 100.0))
        .await
        .expect("task");
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "{took:?}");
    for wait in [json!(-1), json!("soon")] {
        let mut body = delivery("d", 0.0);
        body["wait"] = wait;
        let (status, answer, _) = spawn_pull(&server, body).await.expect("task");
        assert_eq!(status, 422);
        assert_eq!(answer["field"], "wait");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_restart_during_long_polls_loses_nothing() {
    let mut server = TestServer::start().await;
    let waiters: Vec<_> = (0..20)
        .map(|i| spawn_pull(&server, delivery(&format!("rn-{i}"), 30.0)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    server.restart().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "waiting pulls held up the shutdown"
    );
    for waiter in waiters {
        let (status, answer, _) = waiter.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(answer["events"], json!([]));
    }
    server
        .ingest_ok(json!([item("stock.picking", 5, "create")]))
        .await;
    for i in 0..20 {
        let answer = server
            .pull_ok(&session(42), &delivery(&format!("rn-{i}"), 0.0))
            .await;
        assert_eq!(event_ids(&answer), vec![1], "device rn-{i}");
    }
    server.stop().await;
}
