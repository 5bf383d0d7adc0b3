//! The seed's Flutter, React Native and React clients: requests exactly as they send them, and
//! every field they read, with the types they expect.

use serde_json::{Value, json};
use smartsync_tests::{TestServer, item, session};

/// The fields every client reads from a pull answer, with their JSON types.
fn assert_seed_shape(answer: &Value) {
    assert_eq!(answer["status"], "success");
    assert!(answer["has_updates"].is_boolean());
    assert!(answer["new_events_count"].is_u64());
    assert!(answer["next_sync_token"].is_string());
    let events = answer["events"].as_array().expect("events is an array");
    assert_eq!(answer["new_events_count"], events.len());
    assert_eq!(answer["has_updates"], !events.is_empty());
    for event in events {
        assert!(event["id"].is_i64(), "{event}");
        assert!(event["model"].is_string(), "{event}");
        assert!(event["record_id"].is_i64(), "{event}");
        assert!(["create", "write", "unlink"].contains(&event["event"].as_str().expect("event")));
        let timestamp = event["timestamp"].as_str().expect("timestamp");
        assert!(
            timestamp.ends_with('Z') && timestamp.contains('T'),
            "ISO-8601 UTC: {timestamp}"
        );
    }
}

async fn seed_stream(server: &TestServer) {
    server
        .ingest_ok(json!([
            item("sale.order", 10, "create"),
            item("res.partner", 11, "create"),
            item("product.template", 12, "write"),
            item("stock.picking", 13, "create"),
            item("stock.picking", 13, "write"),
            item("account.move", 14, "create"),
            item("hr.expense", 15, "create"),
            item("sale.order", 10, "unlink"),
            item("stock.picking", 13, "unlink"),
        ]))
        .await;
}

#[tokio::test]
async fn flutter_sales_app() {
    let server = TestServer::start().await;
    seed_stream(&server).await;
    // http.post(Uri.parse('$baseUrl/api/v2/sync/pull'), headers: {...}, body: jsonEncode({...}))
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("Content-Type", "application/json")
        .header("X-Session-Id", session(5))
        .body(r#"{"user_id":5,"device_id":"android-8f14e45fceea167a","app_type":"sales_app","limit":100}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let data: Value = response.json().await.expect("json");
    assert_seed_shape(&data);
    let handled: Vec<(String, String)> = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["model"].as_str().expect("m").into(),
                e["event"].as_str().expect("e").into(),
            )
        })
        .collect();
    // Exactly what SyncService.processEvent switches on.
    assert_eq!(
        handled,
        [
            ("sale.order", "create"),
            ("res.partner", "create"),
            ("product.template", "write"),
            ("sale.order", "unlink")
        ]
        .map(|(m, e)| (m.to_string(), e.to_string()))
    );
    server.stop().await;
}

#[tokio::test]
async fn react_native_delivery_app() {
    let server = TestServer::start().await;
    seed_stream(&server).await;
    // fetch(`${baseUrl}/api/v2/sync/pull`, {method: 'POST', headers, body: JSON.stringify(request)})
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("Content-Type", "application/json")
        .header("X-Session-Id", session(42))
        .body(r#"{"user_id":42,"device_id":"rn-7c9e6679-7425-40de-944b","app_type":"delivery_app","limit":50}"#)
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success(), "response.ok");
    let data: Value = response.json().await.expect("json");
    assert_seed_shape(&data);
    let kinds: Vec<&str> = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["model"] == "stock.picking")
        .map(|e| e["event"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["create", "write", "unlink"]);
    assert_eq!(
        data["new_events_count"], 3,
        "only pickings reach the driver"
    );
    server.stop().await;
}

#[tokio::test]
async fn react_manager_dashboard_and_its_sync_state_button() {
    let server = TestServer::start().await;
    seed_stream(&server).await;
    // axios.post(url, {...}, {headers: {'X-Session-Id': sessionId}}): axios adds the JSON
    // content type and an Accept header, and the browser adds its Origin.
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/plain, */*")
        .header("Origin", "http://localhost:3000")
        .header("X-Session-Id", session(2))
        .body(r#"{"user_id":2,"device_id":"web-k3j9x0q2a","app_type":"manager_app","limit":200}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let data: Value = response.json().await.expect("json");
    assert_seed_shape(&data);
    // groupByModel counts create/write/unlink per model.
    let models: Vec<&str> = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["model"].as_str().expect("model"))
        .collect();
    for model in [
        "sale.order",
        "res.partner",
        "stock.picking",
        "account.move",
        "hr.expense",
    ] {
        assert!(models.contains(&model), "{model} reaches the dashboard");
    }

    // axios.get(url, {params: {user_id, device_id}, headers: {'X-Session-Id': sessionId}})
    let state = server
        .client
        .get(server.url("/api/v2/sync/state?user_id=2&device_id=web-k3j9x0q2a"))
        .header("Accept", "application/json, text/plain, */*")
        .header("Origin", "http://localhost:3000")
        .header("X-Session-Id", session(2))
        .send()
        .await
        .expect("send");
    assert_eq!(state.status(), 200);
    let stats: Value = state.json().await.expect("json");
    let last_sync = stats["last_sync_time"].as_str().expect("last_sync_time");
    assert!(
        last_sync.ends_with('Z') && last_sync.contains('T'),
        "{last_sync}"
    );
    assert_eq!(stats["sync_count"], 1);
    assert_eq!(stats["last_event_id"], 9);
    server.stop().await;
}

#[tokio::test]
async fn browsers_may_call_from_allowed_origins_only() {
    let server = TestServer::start_with(|c| {
        c.server.cors_origins = vec![
            "http://localhost:*".into(),
            "https://dashboard.propanel.ma".into(),
        ];
    })
    .await;
    for (origin, allowed) in [
        ("http://localhost:3000", true),
        ("https://dashboard.propanel.ma", true),
        ("https://evil.example", false),
        ("http://localhost.evil.example", false),
    ] {
        for path in ["/api/v2/sync/pull", "/api/v2/sync/state"] {
            let preflight = server
                .client
                .request(reqwest::Method::OPTIONS, server.url(path))
                .header("Origin", origin)
                .header(
                    "Access-Control-Request-Method",
                    if path.ends_with("pull") {
                        "POST"
                    } else {
                        "GET"
                    },
                )
                .header(
                    "Access-Control-Request-Headers",
                    "content-type,x-session-id",
                )
                .send()
                .await
                .expect("preflight");
            assert!(preflight.status().is_success());
            let headers = preflight.headers();
            if allowed {
                assert_eq!(headers["access-control-allow-origin"], origin);
                let allow_headers = headers["access-control-allow-headers"]
                    .to_str()
                    .expect("ascii");
                assert!(
                    allow_headers.contains("x-session-id")
                        && allow_headers.contains("content-type")
                );
                let methods = headers["access-control-allow-methods"]
                    .to_str()
                    .expect("ascii");
                assert!(methods.contains("GET") && methods.contains("POST"));
            } else {
                assert!(
                    headers.get("access-control-allow-origin").is_none(),
                    "{origin} must not be allowed"
                );
            }
        }
    }
    server.stop().await;
}
