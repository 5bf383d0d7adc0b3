//! `auth.mode = "odoo"`: sessions checked against (a stand-in for) Odoo, with a cache.

use serde_json::{Value, json};
use smartsync::config::AuthMode;
use smartsync_tests::odoo::FakeOdoo;
use smartsync_tests::{TestServer, item};

fn pull_as(user_id: i64) -> Value {
    json!({"user_id": user_id, "device_id": "ios-1", "app_type": "sales_app", "limit": 100})
}

async fn odoo_server(odoo_url: &str, cache_ok_secs: u64) -> TestServer {
    let url = odoo_url.to_string();
    TestServer::start_with(move |c| {
        c.auth.mode = AuthMode::Odoo;
        c.auth.odoo_url = url;
        c.auth.odoo_timeout_ms = 2000;
        c.auth.cache_ok_secs = cache_ok_secs;
        c.auth.cache_error_secs = 0;
    })
    .await
}

#[tokio::test]
async fn odoo_sessions_are_checked_and_cached() {
    let odoo = FakeOdoo::start().await;
    odoo.login("abc123", 5, &[1, 3]);
    let server = odoo_server(&odoo.url, 60).await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;

    let first = server.pull_ok("abc123", &pull_as(5)).await;
    assert_eq!(first["new_events_count"], 1);
    assert_eq!(odoo.calls(), 1);
    for _ in 0..5 {
        server.pull_ok("abc123", &pull_as(5)).await;
    }
    assert_eq!(odoo.calls(), 1, "a cached session costs no Odoo round trip");

    // The body's user_id must be the session's uid.
    let spoof = server.pull("abc123", &pull_as(2)).await;
    assert_eq!(spoof.status(), 403);

    let expired = server.pull("expired-session", &pull_as(5)).await;
    assert_eq!(expired.status(), 401);
    let body: Value = expired.json().await.expect("json");
    assert_eq!(body["code"], "invalid_session");
    server.stop().await;
}

#[tokio::test]
async fn a_session_logged_out_in_odoo_is_refused_once_the_cache_expires() {
    let odoo = FakeOdoo::start().await;
    odoo.login("s1", 5, &[1]);
    let server = odoo_server(&odoo.url, 0).await;
    assert_eq!(server.pull("s1", &pull_as(5)).await.status(), 200);
    odoo.logout("s1");
    assert_eq!(server.pull("s1", &pull_as(5)).await.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn odoo_down_answers_503_with_retry_after() {
    let odoo = FakeOdoo::start().await;
    odoo.login("s1", 5, &[1]);
    let server = odoo_server(&odoo.url, 0).await;
    odoo.set_failing(true);
    let response = server.pull("s1", &pull_as(5)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "auth_unavailable");
    odoo.set_failing(false);
    assert_eq!(server.pull("s1", &pull_as(5)).await.status(), 200);
    server.stop().await;

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let server = odoo_server(&url, 60).await;
    let response = server.pull("s1", &pull_as(5)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_session_ask_odoo_once() {
    let odoo = FakeOdoo::start().await;
    odoo.login("fleet", 5, &[1]);
    // Slow enough that every request arrives while the first question is still out.
    odoo.set_delay(std::time::Duration::from_millis(300));
    let server = odoo_server(&odoo.url, 60).await;
    let bodies: Vec<Value> = (0..20)
        .map(|i| json!({"user_id": 5, "device_id": format!("tablet-{i}"), "app_type": "sales_app"}))
        .collect();
    let pulls = bodies.iter().map(|body| server.pull("fleet", body));
    let answers = futures_util::future::join_all(pulls).await;
    assert!(answers.iter().all(|r| r.status() == 200));
    assert_eq!(odoo.calls(), 1, "20 requests, one question to Odoo");

    // While Odoo is down, waiting requests share its failure instead of each timing out.
    odoo.set_failing(true);
    let body = pull_as(5);
    let pulls = (0..20).map(|_| server.pull("other-session", &body));
    let answers = futures_util::future::join_all(pulls).await;
    assert!(answers.iter().all(|r| r.status() == 503));
    assert_eq!(odoo.calls(), 2);
    // A failure is not kept: the next request asks again.
    odoo.set_failing(false);
    odoo.set_delay(std::time::Duration::ZERO);
    assert_eq!(server.pull("fleet", &pull_as(5)).await.status(), 200);
    assert_eq!(
        server.pull("other-session", &pull_as(5)).await.status(),
        401
    );
    assert_eq!(
        odoo.calls(),
        3,
        "fleet is cached; other-session is asked again"
    );
    server.stop().await;
}
