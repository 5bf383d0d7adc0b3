//! What every endpoint shares: JSON errors, compression, health checks.

use std::io::Read;

use serde_json::{Value, json};
use smartsync_tests::{TestServer, item, session};

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::start().await;
    let missing = server
        .client
        .get(server.url("/api/v3/nothing"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "error", "code": "not_found", "message": body["message"]})
    );
    let wrong = server
        .client
        .get(server.url("/api/v2/sync/pull"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 405);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["code"], "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn large_answers_are_gzipped_when_asked() {
    let server = TestServer::start().await;
    let events: Vec<Value> = (1..=50)
        .map(|i| {
            json!({"model": "sale.order", "record_id": i, "event": "write",
                        "payload": {"name": format!("S{i:05}"), "state": "sale"}})
        })
        .collect();
    server.ingest_ok(json!(events)).await;
    let body =
        json!({"user_id": 5, "device_id": "android-1", "app_type": "sales_app", "limit": 100});
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("X-Session-Id", session(5))
        .header("Accept-Encoding", "gzip")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    assert!(compressed.len() < text.len());
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["new_events_count"], 50);

    // Small answers, and clients that do not ask, get plain JSON.
    let plain = server.pull(&session(5), &body).await;
    assert!(plain.headers().get("content-encoding").is_none());
    server.stop().await;
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.server.compression = false).await;
    let events: Vec<Value> = (1..=50).map(|i| item("sale.order", i, "write")).collect();
    server.ingest_ok(json!(events)).await;
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("X-Session-Id", session(5))
        .header("Accept-Encoding", "gzip")
        .json(&json!({"user_id": 5, "device_id": "a", "app_type": "sales_app"}))
        .send()
        .await
        .expect("send");
    assert!(response.headers().get("content-encoding").is_none());
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    server.stop().await;
}
