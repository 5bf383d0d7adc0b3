//! Getting events in: the batch API and Odoo's webhook.

use serde_json::{Value, json};
use smartsync_tests::{INGEST_TOKEN, TestServer, event_ids, item, session};

async fn everything(server: &TestServer) -> Vec<Value> {
    let answer = server
        .pull_ok(
            &session(2),
            &json!({"user_id": 2, "device_id": "inspector", "app_type": "manager_app", "limit": 1000}),
        )
        .await;
    answer["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn a_batch_is_numbered_in_order_and_stored_whole() {
    let server = TestServer::start().await;
    let ids = server
        .ingest_ok(json!([
            {"model": "sale.order", "record_id": 1, "event": "create",
             "timestamp": "2024-01-15T12:30:00+02:00", "payload": {"name": "S00001"},
             "changed_fields": ["name"]},
            item("res.partner", 9, "write"),
            item("sale.order", 1, "unlink"),
        ]))
        .await;
    assert_eq!(ids, vec![1, 2, 3]);
    let events = everything(&server).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["timestamp"], "2024-01-15T10:30:00Z");
    assert_eq!(events[0]["payload"], json!({"name": "S00001"}));
    assert_eq!(events[0]["changed_fields"], json!(["name"]));
    assert_eq!(events[2]["event"], "unlink");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_item_rejects_the_whole_batch_and_names_index_and_field() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    let cases = [
        (
            json!([
                item("sale.order", 2, "create"),
                item("sale.order", -4, "write")
            ]),
            "events[1].record_id",
        ),
        (
            json!([
                item("sale.order", 2, "create"),
                item("Sale Order", 4, "write")
            ]),
            "events[1].model",
        ),
        (json!([item("sale.order", 2, "delete")]), "events[0].event"),
        (
            json!([{"model": "sale.order", "event": "create"}]),
            "events[0].record_id",
        ),
        (
            json!([{"model": "sale.order", "record_id": 2, "event": "create", "timestamp": "soon"}]),
            "events[0].timestamp",
        ),
        (
            json!([{"model": "sale.order", "record_id": 2, "event": "create", "payload": [1, 2]}]),
            "events[0].payload",
        ),
        (
            json!([{"model": "sale.order", "record_id": 2, "event": "create", "colour": "red"}]),
            "events[0].colour",
        ),
    ];
    for (events, field) in cases {
        let response = server.ingest(events).await;
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "error");
        assert_eq!(body["code"], "invalid_request");
        assert_eq!(body["field"], field, "{body}");
    }
    // Nothing of the rejected batches was stored.
    assert_eq!(everything(&server).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_dedupe_key_never_makes_a_second_event() {
    let server = TestServer::start().await;
    let first = server
        .ingest_ok(json!([
            {"model": "res.partner", "record_id": 3, "event": "write", "key": "k-1"},
            {"model": "res.partner", "record_id": 4, "event": "write", "key": "k-2"},
        ]))
        .await;
    let again = server
        .ingest_ok(json!([
            {"model": "res.partner", "record_id": 4, "event": "write", "key": "k-2"},
            {"model": "res.partner", "record_id": 5, "event": "write", "key": "k-3"},
            {"model": "res.partner", "record_id": 5, "event": "write", "key": "k-3"},
        ]))
        .await;
    assert_eq!(first, vec![1, 2]);
    assert_eq!(again, vec![2, 3, 3]);
    assert_eq!(everything(&server).await.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn ingest_needs_the_token() {
    let server = TestServer::start().await;
    let url = server.url("/api/v2/events");
    let body = json!({"events": [item("sale.order", 1, "create")]});
    let missing = server
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 401);
    let wrong = server
        .client
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["code"], "invalid_token");
    let hook = server
        .client
        .post(server.url("/api/v2/webhooks/odoo?token=nope"))
        .json(&json!({"_model": "sale.order", "_id": 1, "_action": "x(#1)"}))
        .send()
        .await
        .expect("send");
    assert_eq!(hook.status(), 401);
    assert!(everything(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn odoo_webhooks_become_events() {
    let server = TestServer::start().await;
    // What Odoo 17 posts for a rule on creation with fields selected: sorted keys, many2one as
    // bare ids, datetimes as "YYYY-MM-DD HH:MM:SS" strings, `False` for empty values.
    let created = json!({
        "_action": "Smart Sync: sale.order created(#41)", "_id": 42, "_model": "sale.order",
        "amount_total": 1250.5, "company_id": 1, "create_date": "2024-01-15 10:30:00",
        "id": 42, "name": "S00042", "note": false, "partner_id": 7, "state": "draft",
        "user_id": 5, "write_date": "2024-01-15 10:30:00"
    });
    let written = json!({
        "_action": "Smart Sync: sale.order updated(#42)", "_id": 42, "_model": "sale.order",
        "create_date": "2024-01-15 10:30:00", "id": 42, "state": "sale",
        "write_date": "2024-01-15 11:02:13"
    });
    let deleted = json!({"_action": "Smart Sync: sale.order deleted(#43)", "_id": 42,
                         "_model": "sale.order", "id": 42, "write_date": "2024-01-15 11:02:13"});
    for (query, body, id, duplicate) in [
        ("", &created, 1, false),
        ("", &written, 2, false),
        ("event=unlink", &deleted, 3, false),
        // Odoo retries after its 1 s timeout: the same post again is the same event.
        ("", &written, 2, true),
    ] {
        let response = server.webhook(query, body).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["duplicate"], duplicate);
    }
    let events = everything(&server).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["create", "write", "unlink"]);
    assert_eq!(events[0]["record_id"], 42);
    assert_eq!(events[0]["timestamp"], "2024-01-15T10:30:00Z");
    assert_eq!(events[0]["payload"]["partner_id"], 7);
    assert_eq!(events[0]["payload"]["note"], false);
    assert!(events[0]["payload"].get("_action").is_none());
    assert_eq!(events[1]["timestamp"], "2024-01-15T11:02:13Z");
    server.stop().await;
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_reasons() {
    let server = TestServer::start().await;
    for (query, body, status, code) in [
        ("", json!({"_id": 1, "id": 1}), 422, "invalid_request"),
        (
            "",
            json!({"_model": "sale.order", "_id": "one"}),
            422,
            "invalid_request",
        ),
        (
            "event=delete",
            json!({"_model": "sale.order", "_id": 1}),
            400,
            "invalid_event_kind",
        ),
        ("", json!([1, 2, 3]), 422, "invalid_request"),
    ] {
        let response = server.webhook(query, &body).await;
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["code"], code, "{answer}");
    }
    let garbage = server
        .client
        .post(format!(
            "{}?token={INGEST_TOKEN}",
            server.url("/api/v2/webhooks/odoo")
        ))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(garbage.status(), 400);
    assert!(everything(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_webhooks_all_land_with_distinct_ids_in_commit_order() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for i in 1..=200 {
        let client = server.client.clone();
        let url = format!(
            "{}?token={INGEST_TOKEN}&event=write",
            server.url("/api/v2/webhooks/odoo")
        );
        tasks.push(tokio::spawn(async move {
            let body = json!({"_model": "res.partner", "_id": i, "_action": "x(#1)", "id": i});
            let response = client.post(url).json(&body).send().await.expect("send");
            assert_eq!(response.status(), 200);
            let answer: Value = response.json().await.expect("json");
            answer["id"].as_i64().expect("id")
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    let seen = everything(&server).await;
    let seen_ids = event_ids(&json!({"events": seen}));
    assert_eq!(seen_ids, (1..=200).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn oversized_batches_are_refused() {
    let server = TestServer::start_with(|c| {
        c.ingest.max_batch_events = 10;
        c.server.max_body_bytes = 4096;
    })
    .await;
    let many: Vec<Value> = (1..=11).map(|i| item("sale.order", i, "write")).collect();
    let response = server.ingest(json!(many)).await;
    assert_eq!(response.status(), 422);
    let huge = json!([{"model": "sale.order", "record_id": 1, "event": "write",
                       "payload": {"note": "x".repeat(5000)}}]);
    let response = server.ingest(huge).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "payload_too_large");
    assert!(everything(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_second_change_with_the_same_write_date_is_not_a_retry() {
    let server = TestServer::start().await;
    let order = |write_date: &str, state: &str| {
        json!({"_model": "sale.order", "_id": 42, "id": 42, "write_date": write_date,
               "state": state})
    };
    let earlier = order("2024-01-15 10:29:00", "draft");
    // Three writes of one order in one second (a confirmation that writes twice, an automated
    // action that changes a field and changes it back): Odoo stamps them with one write_date.
    let draft = order("2024-01-15 10:30:00", "draft");
    let confirmed = order("2024-01-15 10:30:00", "sale");
    // The first version again, through another rule, its fields in another order.
    let draft_again = json!({"state": "draft", "write_date": "2024-01-15 10:30:00", "id": 42,
                             "_action": "Smart Sync: another rule(#50)",
                             "_id": 42, "_model": "sale.order"});
    for (body, id, duplicate) in [
        (&earlier, 1, false),
        (&draft, 2, false),
        // A retry of the newest version.
        (&draft, 2, true),
        (&confirmed, 3, false),
        (&confirmed, 3, true),
        // The order changed back within the same second: a change, not a retry.
        (&draft_again, 4, false),
        (&draft, 4, true),
        // An older version arriving late is a retry.
        (&earlier, 1, true),
    ] {
        let response = server.webhook("event=write", body).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["id"], id, "{body}: {answer}");
        assert_eq!(answer["duplicate"], duplicate, "{body}: {answer}");
    }
    let versions: Vec<(Value, Value)> = everything(&server)
        .await
        .iter()
        .map(|e| (e["timestamp"].clone(), e["payload"]["state"].clone()))
        .collect();
    assert_eq!(
        versions,
        [
            (json!("2024-01-15T10:29:00Z"), json!("draft")),
            (json!("2024-01-15T10:30:00Z"), json!("draft")),
            (json!("2024-01-15T10:30:00Z"), json!("sale")),
            (json!("2024-01-15T10:30:00Z"), json!("draft")),
        ]
    );
    server.stop().await;
}
