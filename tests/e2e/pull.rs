//! Pulling: positions, paging, tokens, limits, and who may read what.

use serde_json::{Value, json};
use smartsync_tests::{TestServer, event_ids, item, session};

fn sales(device: &str, limit: i64) -> Value {
    json!({"user_id": 5, "device_id": device, "app_type": "sales_app", "limit": limit})
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["status"], "error", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    (status, body)
}

#[tokio::test]
async fn each_app_type_sees_its_models_only() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([
            item("sale.order", 1, "create"),
            item("stock.picking", 2, "create"),
            item("account.move", 3, "create"),
            item("product.template", 4, "write"),
            item("res.users", 5, "write"),
        ]))
        .await;
    let sales = server.pull_ok(&session(5), &sales("a", 100)).await;
    assert_eq!(event_ids(&sales), vec![1, 4]);
    let delivery = server
        .pull_ok(
            &session(42),
            &json!({"user_id": 42, "device_id": "rn-1", "app_type": "delivery_app", "limit": 50}),
        )
        .await;
    assert_eq!(event_ids(&delivery), vec![2]);
    let manager = server
        .pull_ok(
            &session(2),
            &json!({"user_id": 2, "device_id": "web-1", "app_type": "manager_app", "limit": 200}),
        )
        .await;
    assert_eq!(event_ids(&manager), vec![1, 2, 3, 4]);
    server.stop().await;
}

#[tokio::test]
async fn the_server_keeps_each_devices_position_and_pages_with_has_more() {
    let server = TestServer::start().await;
    let events: Vec<Value> = (1..=25)
        .map(|i| {
            item(
                if i % 2 == 0 {
                    "sale.order"
                } else {
                    "stock.picking"
                },
                i,
                "write",
            )
        })
        .collect();
    server.ingest_ok(json!(events)).await;
    // 12 sale.order events (even ids) interleaved with pickings the sales feed skips.
    let first = server.pull_ok(&session(5), &sales("a", 5)).await;
    assert_eq!(event_ids(&first), vec![2, 4, 6, 8, 10]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["new_events_count"], 5);
    let second = server.pull_ok(&session(5), &sales("a", 5)).await;
    assert_eq!(event_ids(&second), vec![12, 14, 16, 18, 20]);
    let third = server.pull_ok(&session(5), &sales("a", 5)).await;
    assert_eq!(event_ids(&third), vec![22, 24]);
    assert_eq!(third["has_more"], false);
    let empty = server.pull_ok(&session(5), &sales("a", 5)).await;
    assert_eq!(empty["has_updates"], false);
    assert_eq!(empty["new_events_count"], 0);
    assert_eq!(empty["events"], json!([]));
    // Another device of the same user starts from the beginning.
    let other = server.pull_ok(&session(5), &sales("b", 100)).await;
    assert_eq!(event_ids(&other).len(), 12);

    let state = server.state(&session(5), "user_id=5&device_id=a").await;
    assert_eq!(state.status(), 200);
    let state: Value = state.json().await.expect("json");
    assert_eq!(state["sync_count"], 4);
    assert_eq!(state["last_event_id"], 25);
    assert_eq!(state["pending_events"], 0);
    assert_eq!(state["app_type"], "sales_app");
    server
        .ingest_ok(json!([
            item("sale.order", 99, "create"),
            item("stock.picking", 98, "create")
        ]))
        .await;
    let state: Value = server
        .state(&session(5), "user_id=5&device_id=a&app_type=sales_app")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(state["pending_events"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_sync_token_resumes_from_where_it_was_issued() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!(
            (1..=6)
                .map(|i| item("sale.order", i, "write"))
                .collect::<Vec<_>>()
        ))
        .await;
    let first = server.pull_ok(&session(5), &sales("a", 3)).await;
    let token = first["next_sync_token"]
        .as_str()
        .expect("token")
        .to_string();
    let second = server.pull_ok(&session(5), &sales("a", 3)).await;
    assert_eq!(event_ids(&second), vec![4, 5, 6]);
    // The client crashed before saving events 4-6: it resumes from the token it did save.
    let mut again = sales("a", 3);
    again["sync_token"] = json!(token);
    let replay = server.pull_ok(&session(5), &again).await;
    assert_eq!(event_ids(&replay), vec![4, 5, 6]);
    // An empty log position still gives a usable token.
    let mut from_start = sales("fresh", 10);
    let start = server.pull_ok(&session(5), &from_start).await;
    from_start["sync_token"] = start["next_sync_token"].clone();
    assert!(event_ids(&server.pull_ok(&session(5), &from_start).await).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn forged_or_borrowed_tokens_are_refused() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "write")]))
        .await;
    let answer = server.pull_ok(&session(5), &sales("a", 10)).await;
    let token = answer["next_sync_token"]
        .as_str()
        .expect("token")
        .to_string();

    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for (body, session_id) in [
        (
            json!({"user_id": 5, "device_id": "a", "app_type": "sales_app", "sync_token": tampered}),
            session(5),
        ),
        (
            json!({"user_id": 5, "device_id": "a", "app_type": "sales_app", "sync_token": "garbage!"}),
            session(5),
        ),
        // Issued to device "a": another device of the same user may not use it...
        (
            json!({"user_id": 5, "device_id": "b", "app_type": "sales_app", "sync_token": token}),
            session(5),
        ),
        // ...nor another app_type, nor another user.
        (
            json!({"user_id": 5, "device_id": "a", "app_type": "manager_app", "sync_token": token}),
            session(5),
        ),
        (
            json!({"user_id": 42, "device_id": "a", "app_type": "sales_app", "sync_token": token}),
            session(42),
        ),
    ] {
        let (status, error) = error_of(server.pull(&session_id, &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["code"], "invalid_sync_token");
    }
    server.stop().await;
}

#[tokio::test]
async fn limits_default_cap_and_validate() {
    let server = TestServer::start_with(|c| {
        c.sync.default_limit = 3;
        c.sync.max_limit = 4;
    })
    .await;
    server
        .ingest_ok(json!(
            (1..=10)
                .map(|i| item("sale.order", i, "write"))
                .collect::<Vec<_>>()
        ))
        .await;
    let no_limit = server
        .pull_ok(
            &session(5),
            &json!({"user_id": 5, "device_id": "d", "app_type": "sales_app"}),
        )
        .await;
    assert_eq!(event_ids(&no_limit), vec![1, 2, 3]);
    let capped = server.pull_ok(&session(5), &sales("c", 100)).await;
    assert_eq!(event_ids(&capped), vec![1, 2, 3, 4]);
    for limit in [json!(0), json!(-1), json!("ten"), json!(2.5)] {
        let body = json!({"user_id": 5, "device_id": "x", "app_type": "sales_app", "limit": limit});
        let (status, error) = error_of(server.pull(&session(5), &body).await).await;
        assert_eq!(status, 422, "limit {limit}");
        assert_eq!(error["field"], "limit");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_pulls_get_the_right_status_and_change_nothing() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "write")]))
        .await;
    let ok = json!({"user_id": 5, "device_id": "a", "app_type": "sales_app", "limit": 10});
    let missing_session = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .json(&ok)
        .send()
        .await
        .expect("send");
    let (status, error) = error_of(missing_session).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("missing_session"))
    );
    let (status, error) = error_of(server.pull("no-such-session", &ok).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("invalid_session"))
    );
    // Session of user 42 asking for user 5's feed.
    let (status, error) = error_of(server.pull(&session(42), &ok).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("user_mismatch"))
    );
    let unknown = json!({"user_id": 5, "device_id": "a", "app_type": "hr_app", "limit": 10});
    let (status, error) = error_of(server.pull(&session(5), &unknown).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("unknown_app_type"))
    );
    for (body, field) in [
        (
            json!({"device_id": "a", "app_type": "sales_app"}),
            "user_id",
        ),
        (
            json!({"user_id": "5", "device_id": "a", "app_type": "sales_app"}),
            "user_id",
        ),
        (json!({"user_id": 5, "app_type": "sales_app"}), "device_id"),
        (
            json!({"user_id": 5, "device_id": "", "app_type": "sales_app"}),
            "device_id",
        ),
    ] {
        let (status, error) = error_of(server.pull(&session(5), &body).await).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(error["field"], field, "{body}");
    }
    let raw = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("X-Session-Id", session(5))
        .body("{\"user_id\": 5,")
        .send()
        .await
        .expect("send");
    let (status, error) = error_of(raw).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_json"))
    );

    // None of that moved device "a": its first real pull still gets event 1.
    let first = server.pull_ok(&session(5), &ok).await;
    assert_eq!(event_ids(&first), vec![1]);
    assert_eq!(
        server
            .state(&session(5), "user_id=5&device_id=a")
            .await
            .json::<Value>()
            .await
            .expect("json")["sync_count"],
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn state_is_private_and_knows_only_devices_that_pulled() {
    let server = TestServer::start().await;
    let (status, error) =
        error_of(server.state(&session(5), "user_id=5&device_id=never").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("unknown_device"))
    );
    server.pull_ok(&session(5), &sales("a", 10)).await;
    let (status, error) = error_of(server.state(&session(42), "user_id=5&device_id=a").await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("user_mismatch"))
    );
    let (status, error) = error_of(server.state(&session(5), "device_id=a").await).await;
    assert_eq!((status, error["field"].as_str()), (422, Some("user_id")));
    let (status, _) = error_of(server.state(&session(5), "user_id=five&device_id=a").await).await;
    assert_eq!(status, 422);
    let (status, _) = error_of(server.state("", "user_id=5&device_id=a").await).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn pulls_read_the_database_when_the_tail_does_not_reach_back() {
    // A tail of 5 events and a scan window of 20: most of this log is read from SQLite, and
    // a pull that finds nothing in its window still moves on and says there is more.
    let server = TestServer::start_with(|c| {
        c.database.tail_events = 5;
        c.sync.scan_window = 20;
        c.sync.max_limit = 10;
        c.sync.default_limit = 10;
    })
    .await;
    let mut events: Vec<Value> = (1..=50)
        .map(|i| item("stock.picking", i, "write"))
        .collect();
    events.extend((51..=60).map(|i| item("sale.order", i, "write")));
    server.ingest_ok(json!(events)).await;
    let mut seen = Vec::new();
    let mut pulls = 0;
    loop {
        let answer = server.pull_ok(&session(5), &sales("db", 4)).await;
        seen.extend(event_ids(&answer));
        pulls += 1;
        if answer["has_more"] == false {
            break;
        }
        assert!(pulls < 20, "paging does not end");
    }
    assert_eq!(seen, (51..=60).collect::<Vec<_>>());
    assert!(
        pulls >= 4,
        "the first windows hold no sales events: {pulls} pulls"
    );
    server.stop().await;
}

#[tokio::test]
async fn coalesce_sends_the_latest_change_of_each_record_and_moves_past_all() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([
            {"model": "sale.order", "record_id": 1, "event": "create", "payload": {"state": "draft"}},
            {"model": "sale.order", "record_id": 2, "event": "write", "changed_fields": ["state"]},
            {"model": "sale.order", "record_id": 1, "event": "write", "payload": {"state": "sale"}, "changed_fields": ["state"]},
            {"model": "sale.order", "record_id": 3, "event": "create"},
            {"model": "sale.order", "record_id": 2, "event": "write", "changed_fields": ["note"]},
            {"model": "sale.order", "record_id": 3, "event": "unlink"},
            {"model": "res.partner", "record_id": 1, "event": "write"},
        ]))
        .await;
    let mut body = sales("c", 100);
    body["coalesce"] = json!(true);
    let answer = server.pull_ok(&session(5), &body).await;
    let events = answer["events"].as_array().expect("events");
    let summary: Vec<(i64, &str, i64, &str)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_i64().expect("id"),
                e["model"].as_str().expect("model"),
                e["record_id"].as_i64().expect("record"),
                e["event"].as_str().expect("kind"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, "sale.order", 1, "create"),
            (5, "sale.order", 2, "write"),
            (7, "res.partner", 1, "write")
        ]
    );
    assert_eq!(events[0]["payload"], json!({"state": "sale"}));
    assert_eq!(events[1]["changed_fields"], json!(["state", "note"]));
    assert_eq!(answer["new_events_count"], 3);
    // The position moved past all seven events.
    let next = server.pull_ok(&session(5), &body).await;
    assert_eq!(next["events"], json!([]));
    // Without the option the same log gives every change.
    let plain = server.pull_ok(&session(5), &sales("plain", 100)).await;
    assert_eq!(event_ids(&plain).len(), 7, "{plain}");
    server.stop().await;
}

#[tokio::test]
async fn an_answer_lost_in_transit_is_answered_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start().await;
    // 400 orders of 20 KB: an 8 MB answer, more than the sockets' buffers hold.
    for batch in 0..20 {
        let events: Vec<Value> = (1..=20)
            .map(|i| {
                json!({"model": "sale.order", "record_id": batch * 20 + i, "event": "write",
                       "payload": {"note": "x".repeat(20_000)}})
            })
            .collect();
        server.ingest_ok(json!(events)).await;
    }
    let request = sales("phone", 1000).to_string();
    let addr = server.base().trim_start_matches("http://").to_string();
    let mut cut = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    cut.write_all(
        format!(
            "POST /api/v2/sync/pull HTTP/1.1\r\nHost: x\r\nX-Session-Id: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{request}",
            session(5),
            request.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // The phone reads the first 64 KiB of the answer, then loses its connection.
    let mut first = vec![0u8; 64 * 1024];
    cut.read_exact(&mut first).await.expect("the answer begins");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    drop(cut);

    // Its next pull answers the same events, and the one after that nothing: a whole answer
    // moves the device.
    let again = server.pull_ok(&session(5), &sales("phone", 1000)).await;
    assert_eq!(event_ids(&again), (1..=400).collect::<Vec<i64>>());
    let after = server.pull_ok(&session(5), &sales("phone", 1000)).await;
    assert_eq!(event_ids(&after), Vec::<i64>::new());
    server.stop().await;
}
