//! Feeds shaped by WASM plugins built from this workspace: the bundled ones, hostile ones that
//! must be stopped, and plugins.toml changing under a running server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync::config::{StaticSession, StaticSessionFull};
use smartsync_tests::{TestServer, bundled_plugins_toml, event_ids, item, plugin_wasm, session};

fn pull_body(user_id: i64, device: &str, app_type: &str) -> Value {
    json!({"user_id": user_id, "device_id": device, "app_type": app_type, "limit": 100})
}

fn hostile_toml(mode: &str, limits: &str) -> String {
    format!(
        "{}[plugins.hostile]\napp_type = \"hostile_app\"\nwasm = {:?}\nconfig = {{ mode = \"{mode}\" }}\nlimits = {{ {limits} }}\n",
        bundled_plugins_toml(),
        plugin_wasm("hostile").display().to_string()
    )
}

/// `toml` with a `limits` table for manager_app.
fn with_manager_limits(toml: &str, limits: &str) -> String {
    let patched = toml.replace(
        "[plugins.manager_app]\n",
        &format!("[plugins.manager_app]\nlimits = {{ {limits} }}\n"),
    );
    assert_ne!(patched, toml, "manager_app is in the file");
    patched
}

/// Records of companies 1, 2 and 3, and a shared one (ids 1 to 4).
fn records_of_three_companies() -> Value {
    json!([
        {"model": "account.move", "record_id": 1, "event": "create", "payload": {"id": 1, "company_id": 1}},
        {"model": "account.move", "record_id": 2, "event": "create", "payload": {"id": 2, "company_id": 2}},
        {"model": "hr.expense", "record_id": 3, "event": "create", "payload": {"id": 3, "company_id": 3}},
        {"model": "res.partner", "record_id": 4, "event": "write", "payload": {"id": 4, "company_id": false}},
    ])
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn the_sales_plugin_keeps_own_orders_and_trims_payloads() {
    let server = TestServer::start().await;
    let toml = bundled_plugins_toml().replace(
        "[plugins.delivery_app]",
        "[plugins.sales_app.config]\nonly_own_orders = true\nfields = [\"name\", \"user_id\"]\n\n[plugins.delivery_app]",
    );
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    server
        .ingest_ok(json!([
            {"model": "sale.order", "record_id": 1, "event": "create",
             "payload": {"id": 1, "name": "S00001", "user_id": 5, "amount_total": 10.0}},
            {"model": "sale.order", "record_id": 2, "event": "create",
             "payload": {"id": 2, "name": "S00002", "user_id": 9, "amount_total": 20.0}},
            {"model": "sale.order", "record_id": 2, "event": "unlink"},
            {"model": "res.partner", "record_id": 3, "event": "unlink"},
        ]))
        .await;
    let answer = server
        .pull_ok(&session(5), &pull_body(5, "android-1", "sales_app"))
        .await;
    // Order 2's deletion carries no values, but the log knew whose order it was: another
    // salesperson's, so it is not sent. A customer's deletion is.
    assert_eq!(
        event_ids(&answer),
        vec![1, 4],
        "own order, and the customer deletion"
    );
    assert_eq!(
        answer["events"][0]["payload"],
        json!({"id": 1, "name": "S00001", "user_id": 5})
    );
    assert_eq!(answer["has_more"], false);
    server.stop().await;
}

#[tokio::test]
async fn the_delivery_plugin_adds_a_status() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([
            {"model": "stock.picking", "record_id": 1, "event": "write",
             "payload": {"id": 1, "state": "assigned", "picking_type_code": "outgoing", "user_id": 42}},
            {"model": "stock.picking", "record_id": 2, "event": "write",
             "payload": {"id": 2, "state": "done", "picking_type_code": "incoming", "user_id": 42}},
            {"model": "sale.order", "record_id": 3, "event": "write"},
        ]))
        .await;
    let answer = server
        .pull_ok(&session(42), &pull_body(42, "rn-1", "delivery_app"))
        .await;
    assert_eq!(event_ids(&answer), vec![1, 2]);
    assert_eq!(answer["events"][0]["data"], json!({"status": "ready"}));
    assert_eq!(answer["events"][1]["data"], json!({"status": "delivered"}));
    server.stop().await;
}

#[tokio::test]
async fn the_manager_plugin_labels_and_keeps_allowed_companies() {
    let server = TestServer::start().await;
    server.ingest_ok(records_of_three_companies()).await;
    // session-7 is a user of companies 1 and 3.
    let answer = server
        .pull_ok(&session(7), &pull_body(7, "web-1", "manager_app"))
        .await;
    assert_eq!(event_ids(&answer), vec![1, 3, 4]);
    assert_eq!(answer["events"][0]["data"]["label"], "الفواتير");
    assert_eq!(answer["events"][1]["data"]["label"], "المصروفات");
    server.stop().await;
}

#[tokio::test]
async fn the_manager_plugin_sends_no_other_companys_deletion() {
    // User 11 may see company 1 only.
    let server = TestServer::start_with(|config| {
        config.auth.sessions.insert(
            session(11),
            StaticSession::Full(StaticSessionFull {
                uid: 11,
                company_ids: vec![1],
                lang: None,
                tz: None,
            }),
        );
    })
    .await;
    server
        .ingest_ok(json!([
            {"model": "sale.order", "record_id": 1, "event": "create",
             "payload": {"company_id": 2, "name": "X", "amount_total": 5}},
            {"model": "sale.order", "record_id": 1, "event": "unlink",
             "payload": {"company_id": 2, "name": "X", "amount_total": 5}},
            {"model": "sale.order", "record_id": 2, "event": "unlink"},
            {"model": "sale.order", "record_id": 3, "event": "unlink",
             "payload": {"company_id": 1, "name": "Y", "amount_total": 7}},
            {"model": "sale.order", "record_id": 4, "event": "unlink",
             "payload": {"company_id": 2, "name": "Z", "amount_total": 9}},
        ]))
        .await;
    let answer = server
        .pull_ok(&session(11), &pull_body(11, "web-11", "manager_app"))
        .await;
    assert_eq!(
        event_ids(&answer),
        vec![3, 4, 5],
        "company 2's record, created and deleted, is not sent: {answer}"
    );
    let events = &answer["events"];
    // A deletion that does not say whose record it was comes without values.
    assert_eq!(events[0].get("payload"), None, "{answer}");
    assert_eq!(events[0]["event"], "unlink");
    assert_eq!(events[0]["data"]["label"], "طلبات البيع");
    assert_eq!(
        events[1]["payload"],
        json!({"company_id": 1, "name": "Y", "amount_total": 7})
    );
    // Company 2's, but the log has no history of it: a device may hold it from a version the
    // log no longer knows (one of company 1), so the deletion comes, with nothing of it.
    assert_eq!(events[2].get("payload"), None, "{answer}");
    assert_eq!(events[2]["event"], "unlink");
    server.stop().await;
}

/// The status of the plugin serving `app_type`, from the admin API.
async fn plugin_status(server: &TestServer, app_type: &str) -> Value {
    let status = server.admin_plugins().await;
    status["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["app_type"] == app_type)
        .cloned()
        .unwrap_or_else(|| panic!("{app_type} listed in {status}"))
}

#[tokio::test]
async fn managers_of_the_same_companies_share_answers_and_no_one_else_does() {
    let server = TestServer::start_with(|config| {
        for (uid, company_ids) in [(8, vec![1, 3]), (9, vec![2])] {
            config.auth.sessions.insert(
                session(uid),
                StaticSession::Full(StaticSessionFull {
                    uid,
                    company_ids,
                    lang: None,
                    tz: None,
                }),
            );
        }
    })
    .await;
    server.ingest_ok(records_of_three_companies()).await;

    // User 7 (companies 1 and 3) pulls first: the plugin shapes the four events.
    let first = server
        .pull_ok(&session(7), &pull_body(7, "web-7", "manager_app"))
        .await;
    assert_eq!(event_ids(&first), vec![1, 3, 4]);
    // User 8 has the same companies: the same answer, from the cache.
    let same = server
        .pull_ok(&session(8), &pull_body(8, "web-8", "manager_app"))
        .await;
    assert_eq!(same["events"], first["events"]);
    // User 9 (company 2) gets an answer of its own: nothing of companies 1 and 3.
    let other = server
        .pull_ok(&session(9), &pull_body(9, "web-9", "manager_app"))
        .await;
    assert_eq!(event_ids(&other), vec![2, 4]);
    assert_eq!(other["events"][0]["data"]["label"], "الفواتير");

    let manager = plugin_status(&server, "manager_app").await;
    assert_eq!(
        manager["manifest"]["answers_depend_on"],
        json!(["company_ids"])
    );
    let cache = &manager["answer_cache"];
    assert_eq!(cache["depends_on"], json!(["company_ids"]));
    assert_eq!(cache["scopes"], 2);
    assert_eq!(cache["events_reused"], 4, "{manager}");
    assert_eq!(cache["events_shaped"], 8, "{manager}");
    assert_eq!(
        manager["counters"]["calls"], 2,
        "user 8's pull called no plugin"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_commit_waking_many_pulls_of_one_scope_calls_the_plugin_once() {
    let server = TestServer::start().await;
    let toml = with_manager_limits(&bundled_plugins_toml(), "max_instances = 1");
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    // Twenty devices of user 5 wait; one invoice wakes them all.
    let waiting: Vec<_> = (0..20)
        .map(|d| {
            let body = json!({"user_id": 5, "device_id": format!("dash-{d}"), "app_type": "manager_app", "wait": 30});
            let request = server
                .client
                .post(server.url("/api/v2/sync/pull"))
                .header("X-Session-Id", session(5))
                .json(&body)
                .send();
            tokio::spawn(async move {
                let answer: Value = request.await.expect("pull").json().await.expect("json");
                answer
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .ingest_ok(json!([{"model": "account.move", "record_id": 1, "event": "create", "payload": {"id": 1, "company_id": false}}]))
        .await;
    for pull in waiting {
        let answer = pull.await.expect("pull task");
        assert_eq!(event_ids(&answer), vec![1], "{answer}");
    }
    let manager = plugin_status(&server, "manager_app").await;
    assert_eq!(manager["counters"]["calls"], 1, "{manager}");
    assert_eq!(manager["answer_cache"]["events_reused"], 19, "{manager}");
    server.stop().await;
}

#[tokio::test]
async fn a_new_config_is_answered_anew() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("account.move", 1, "create")]))
        .await;
    let label = |answer: &Value| answer["events"][0]["data"]["label"].clone();
    let first = server
        .pull_ok(&session(5), &pull_body(5, "a", "manager_app"))
        .await;
    assert_eq!(label(&first), "الفواتير");
    let toml = format!(
        "{}[plugins.manager_app.config]\nlabels = {{ \"account.move\" = \"Invoices\" }}\n",
        bundled_plugins_toml()
    );
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    let second = server
        .pull_ok(&session(5), &pull_body(5, "b", "manager_app"))
        .await;
    assert_eq!(label(&second), "Invoices");
    server.stop().await;
}

#[tokio::test]
async fn answers_are_not_reused_without_the_plugins_leave_or_memory_for_them() {
    let server = TestServer::start().await;
    // The hostile plugin does not declare `answers-depend-on`.
    let toml = with_manager_limits(&hostile_toml("pass", ""), "answer_cache_mb = 0");
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    server
        .ingest_ok(json!([item("account.move", 1, "create")]))
        .await;
    for round in 0..2 {
        for (app_type, device) in [("hostile_app", "h"), ("manager_app", "m")] {
            let body = json!({"user_id": 5, "device_id": format!("{device}-{round}"), "app_type": app_type});
            assert_eq!(
                event_ids(&server.pull_ok(&session(5), &body).await),
                vec![1]
            );
        }
    }
    let hostile = plugin_status(&server, "hostile_app").await;
    assert_eq!(
        hostile["manifest"].get("answers_depend_on"),
        Some(&Value::Null)
    );
    assert_eq!(hostile.get("answer_cache"), Some(&Value::Null));
    assert_eq!(hostile["counters"]["calls"], 2);
    let manager = plugin_status(&server, "manager_app").await;
    assert_eq!(
        manager["manifest"]["answers_depend_on"],
        json!(["company_ids"])
    );
    assert_eq!(manager.get("answer_cache"), Some(&Value::Null));
    assert_eq!(manager["counters"]["calls"], 2);
    server.stop().await;
}

#[tokio::test]
async fn hostile_plugins_are_stopped_typed_and_contained() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([
            {"model": "sale.order", "record_id": 1, "event": "create", "payload": {"id": 1}},
            {"model": "sale.order", "record_id": 2, "event": "write", "payload": {"id": 2}},
        ]))
        .await;
    // Generous deadlines, so that on a busy machine each mode fails for its own reason; only
    // the endless loop runs into the deadline.
    let limits = "time_ms = 10000, memory_mb = 32, max_output_kb = 1024, quarantine_after = 1000";
    let looping = "time_ms = 200, memory_mb = 32, quarantine_after = 1000";
    for (mode, kind) in [
        ("loop", "timeout"),
        ("memory", "out_of_memory"),
        ("recursion", "trap"),
        ("panic", "trap"),
        ("forged_ids", "bad_output"),
        ("reordered", "bad_output"),
        ("duplicate_ids", "bad_output"),
        ("huge_output", "bad_output"),
        ("bad_json", "bad_output"),
        ("data_not_object", "bad_output"),
        ("error", "plugin_error"),
    ] {
        let limits = if mode == "loop" { looping } else { limits };
        assert_eq!(
            server
                .set_plugins(&hostile_toml(mode, limits))
                .await
                .status(),
            200,
            "{mode}"
        );
        let (status, body) = error_of(
            server
                .pull(&session(5), &pull_body(5, "victim", "hostile_app"))
                .await,
        )
        .await;
        assert_eq!(status, 503, "{mode}: {body}");
        assert_eq!(body["code"], "plugin_failed", "{mode}");
        assert_eq!(body["kind"], kind, "{mode}: {body}");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("hostile@"),
            "{body}"
        );
        // Never fail open, never take others down: the sales feed still serves.
        let sales = server
            .pull(
                &session(5),
                &pull_body(5, format!("sales-{mode}").as_str(), "sales_app"),
            )
            .await;
        assert_eq!(sales.status(), 200, "{mode}");
    }
    // A plugin that floods its stdout works; the flood is capped, not fatal.
    let slow = "time_ms = 10000, quarantine_after = 1000";
    assert_eq!(
        server
            .set_plugins(&hostile_toml("stdout_flood", slow))
            .await
            .status(),
        200
    );
    let flood = server
        .pull_ok(&session(5), &pull_body(5, "flood", "hostile_app"))
        .await;
    assert_eq!(event_ids(&flood), vec![1, 2]);
    // None of the failures moved the victim: with a working plugin it gets everything.
    assert_eq!(
        server
            .set_plugins(&hostile_toml("pass", limits))
            .await
            .status(),
        200
    );
    let after = server
        .pull_ok(&session(5), &pull_body(5, "victim", "hostile_app"))
        .await;
    assert_eq!(event_ids(&after), vec![1, 2]);
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_failing_repeatedly_is_quarantined_then_retried() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    let toml = hostile_toml("panic", "quarantine_after = 2, quarantine_secs = 1");
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    for _ in 0..2 {
        let (status, body) = error_of(
            server
                .pull(&session(5), &pull_body(5, "d", "hostile_app"))
                .await,
        )
        .await;
        assert_eq!((status, body["kind"].as_str()), (503, Some("trap")));
    }
    let (status, body) = error_of(
        server
            .pull(&session(5), &pull_body(5, "d", "hostile_app"))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (503, Some("quarantined")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("hostile plugin panics"),
        "{body}"
    );
    let hostile = plugin_status(&server, "hostile_app").await;
    assert_eq!(hostile["name"], "hostile");
    assert_eq!(hostile["state"], "quarantined");
    assert_eq!(hostile["counters"]["errors"]["trap"], 2);
    // After the cool-down one call is let through again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, body) = error_of(
        server
            .pull(&session(5), &pull_body(5, "d", "hostile_app"))
            .await,
    )
    .await;
    assert_eq!(body["kind"], "trap");
    server.stop().await;
}

#[tokio::test]
async fn plugins_toml_switches_app_types_off_and_bad_files_change_nothing() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    let disabled = bundled_plugins_toml().replace(
        "app_type = \"sales_app\"",
        "app_type = \"sales_app\"\nenabled = false",
    );
    assert_eq!(server.set_plugins(&disabled).await.status(), 200);
    let (status, body) = error_of(
        server
            .pull(&session(5), &pull_body(5, "a", "sales_app"))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("app_type_disabled"))
    );

    // A bad file is refused with the key and the file named; what runs stays.
    let response = server
        .set_plugins(&format!("{}colour = \"red\"\n", bundled_plugins_toml()))
        .await;
    let (status, body) = error_of(response).await;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "reload_failed");
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("colour") && message.contains("plugins.toml"),
        "{message}"
    );
    let (status, _) = error_of(
        server
            .pull(&session(5), &pull_body(5, "a", "sales_app"))
            .await,
    )
    .await;
    assert_eq!(status, 403, "the previous (disabled) set still runs");
    let admin = server.admin_plugins().await;
    assert!(
        admin["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("colour"))
    );

    let missing = bundled_plugins_toml().replace("sales_app.wasm", "no_such_plugin.wasm");
    let (status, body) = error_of(server.set_plugins(&missing).await).await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("no_such_plugin.wasm")
    );

    let two = format!(
        "{}[plugins.other_sales]\napp_type = \"sales_app\"\nwasm = {:?}\n",
        bundled_plugins_toml(),
        plugin_wasm("sales_app").display().to_string()
    );
    let (status, body) = error_of(server.set_plugins(&two).await).await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("both enabled"),
        "{body}"
    );

    assert_eq!(
        server.set_plugins(&bundled_plugins_toml()).await.status(),
        200
    );
    assert_eq!(
        event_ids(
            &server
                .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
                .await
        ),
        vec![1]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_server_notices_plugins_toml_changes_by_itself() {
    let server = TestServer::start().await;
    let disabled = bundled_plugins_toml().replace(
        "app_type = \"delivery_app\"",
        "app_type = \"delivery_app\"\nenabled = false",
    );
    std::fs::write(server.plugins_file(), disabled).expect("write");
    let started = Instant::now();
    loop {
        let status = server
            .pull(&session(42), &pull_body(42, "rn", "delivery_app"))
            .await
            .status();
        if status == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Serves sales_app from a copy of its .wasm in the server's directory, so that a test can
/// replace it: (the copy's path, the original bytes, the plugins.toml in force).
async fn own_copy_of_sales_plugin(
    server: &TestServer,
    on_upgrade: &str,
) -> (std::path::PathBuf, Vec<u8>, String) {
    let wasm = server.dir.path().join("sales_copy.wasm");
    let original = std::fs::read(plugin_wasm("sales_app")).expect("read wasm");
    std::fs::write(&wasm, &original).expect("copy wasm");
    let toml = bundled_plugins_toml().replace(
        &format!("{:?}", plugin_wasm("sales_app").display().to_string()),
        &format!(
            "{:?}\non_upgrade = \"{on_upgrade}\"",
            wasm.display().to_string()
        ),
    );
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    (wasm, original, toml)
}

/// The same component with one more custom section: another version hash, the same behaviour.
fn new_version_of(wasm: &[u8], tag: &str) -> Vec<u8> {
    let mut section = vec![tag.len() as u8];
    section.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8);
    out.extend_from_slice(&section);
    out
}

#[tokio::test]
async fn on_upgrade_reset_sends_devices_that_predate_the_plugin_back_to_the_start() {
    let server = TestServer::start().await;
    let (wasm, original, toml) = own_copy_of_sales_plugin(&server, "reset").await;
    server
        .ingest_ok(json!([
            item("sale.order", 1, "create"),
            item("sale.order", 2, "create")
        ]))
        .await;
    let first = server
        .pull_ok(
            &session(5),
            &json!({"user_id": 5, "device_id": "a", "app_type": "sales_app", "limit": 1}),
        )
        .await;
    assert_eq!(event_ids(&first), vec![1]);
    let old_token = first["next_sync_token"].clone();

    std::fs::write(&wasm, new_version_of(&original, "v2")).expect("new version");
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    server
        .ingest_ok(json!([item("sale.order", 3, "create")]))
        .await;
    let reset = server
        .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
        .await;
    assert_eq!(reset["reset_required"], true);
    assert_eq!(reset["reset_reason"], "plugin_changed");
    assert_eq!(reset["events"], json!([]));
    // A token from before the upgrade is reset too.
    let mut with_token = pull_body(5, "a", "sales_app");
    with_token["sync_token"] = old_token;
    assert_eq!(
        server.pull_ok(&session(5), &with_token).await["reset_reason"],
        "plugin_changed"
    );
    // Then the device reads its whole feed again, through the new version.
    server
        .ingest_ok(json!([item("sale.order", 4, "create")]))
        .await;
    let next = server
        .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
        .await;
    assert_eq!(event_ids(&next), vec![1, 2, 3, 4]);
    assert!(next.get("reset_required").is_none());
    // A device that never pulled is not reset: it starts at the beginning.
    let fresh = server
        .pull_ok(&session(5), &pull_body(5, "b", "sales_app"))
        .await;
    assert_eq!(event_ids(&fresh), vec![1, 2, 3, 4]);
    server.stop().await;
}

#[tokio::test]
async fn on_upgrade_continue_keeps_devices_where_they_are() {
    let server = TestServer::start().await;
    let (wasm, original, toml) = own_copy_of_sales_plugin(&server, "continue").await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    server
        .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
        .await;
    std::fs::write(&wasm, new_version_of(&original, "v2")).expect("new version");
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    server
        .ingest_ok(json!([item("sale.order", 2, "create")]))
        .await;
    let next = server
        .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
        .await;
    assert_eq!(event_ids(&next), vec![2]);
    assert!(next.get("reset_required").is_none());
    server.stop().await;
}

#[tokio::test]
async fn no_pull_fails_while_plugins_are_reloaded_under_load() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!(
            (1..=50)
                .map(|i| item("sale.order", i, "write"))
                .collect::<Vec<_>>()
        ))
        .await;
    let (wasm, original, toml) = own_copy_of_sales_plugin(&server, "continue").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pullers = Vec::new();
    for worker in 0..4 {
        let (client, url, stop) = (
            server.client.clone(),
            server.url("/api/v2/sync/pull"),
            stop.clone(),
        );
        pullers.push(tokio::spawn(async move {
            let mut pulls = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"user_id": 5, "device_id": format!("load-{worker}-{pulls}"), "app_type": "sales_app", "limit": 20});
                let response = client.post(&url).header("X-Session-Id", "session-5").json(&body).send().await.expect("send");
                let status = response.status();
                let answer: Value = response.json().await.expect("json");
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["new_events_count"], 20);
                pulls += 1;
            }
            pulls
        }));
    }
    for round in 0..6 {
        let config = if round % 2 == 0 {
            "\n[plugins.sales_app.config]\nonly_own_orders = false\n"
        } else {
            ""
        };
        std::fs::write(&wasm, new_version_of(&original, &format!("v{round}")))
            .expect("replace wasm");
        assert_eq!(
            server
                .set_plugins(&format!("{toml}{config}"))
                .await
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for puller in pullers {
        total += puller.await.expect("puller");
    }
    assert!(total > 0);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_lists_plugins() {
    let server = TestServer::start().await;
    let anonymous = server
        .client
        .get(server.url("/api/v2/admin/plugins"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    let wrong = server
        .client
        .post(server.url("/api/v2/admin/plugins/reload"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    server
        .ingest_ok(json!([
            item("sale.order", 1, "create"),
            item("res.partner", 2, "create")
        ]))
        .await;
    server
        .pull_ok(&session(5), &pull_body(5, "a", "sales_app"))
        .await;
    let sales = plugin_status(&server, "sales_app").await;
    assert_eq!(sales["state"], "ok");
    assert_eq!(sales["enabled"], true);
    assert_eq!(sales["version_hash"].as_str().map(str::len), Some(16));
    assert_eq!(sales["manifest"]["name"], "sales_app");
    assert_eq!(sales["counters"]["calls"], 1);
    assert_eq!(sales["counters"]["events_in"], 2);
    assert_eq!(sales["counters"]["events_out"], 2);
    server.stop().await;
}

#[tokio::test]
async fn plugins_reach_no_file_environment_or_network() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([item("sale.order", 1, "create")]))
        .await;
    assert_eq!(
        server
            .set_plugins(&hostile_toml("escape", "time_ms = 2000"))
            .await
            .status(),
        200
    );
    let answer = server
        .pull_ok(&session(5), &pull_body(5, "d", "hostile_app"))
        .await;
    assert_eq!(
        answer["events"][0]["data"],
        json!({"file": false, "env_vars": 0, "network": false})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_written_in_python_serves_a_feed() {
    // sdk/python/app.py, built by scripts/build-plugins with componentize-py.
    let wasm = plugin_wasm("python_example");
    let server = TestServer::start().await;
    let toml = format!(
        "{}[plugins.python]\napp_type = \"python_app\"\nwasm = {:?}\nconfig = {{ only_own_orders = true }}\nlimits = {{ time_ms = 5000 }}\n",
        bundled_plugins_toml(),
        wasm.display().to_string()
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
            {"model": "sale.order", "record_id": 1, "event": "create", "payload": {"user_id": 5}},
            {"model": "sale.order", "record_id": 2, "event": "create", "payload": {"user_id": 9}},
            {"model": "res.partner", "record_id": 3, "event": "write"},
            {"model": "stock.picking", "record_id": 4, "event": "write"},
        ]))
        .await;
    let answer = server
        .pull_ok(&session(5), &pull_body(5, "py", "python_app"))
        .await;
    assert_eq!(event_ids(&answer), vec![1, 3]);
    assert_eq!(answer["events"][0]["data"], json!({"written_in": "python"}));
    assert_eq!(answer["events"][0]["payload"], json!({"user_id": 5}));
    // Built for the plain `feed-plugin` world: it loads, and its answers are not reused.
    let python = plugin_status(&server, "python_app").await;
    assert_eq!(
        python["manifest"].get("answers_depend_on"),
        Some(&Value::Null)
    );
    assert_eq!(python.get("answer_cache"), Some(&Value::Null));
    server.stop().await;
}
