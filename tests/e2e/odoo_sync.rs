//! The server reads Odoo by itself: the import of existing records, the sweep that recovers
//! lost webhooks, and the ids check that finds deletions without a trace. Odoo is the stand-in
//! of `smartsync_tests::odoo_db`, which posts webhooks as Odoo 17 does.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync::config::{OdooModelConfig, Span};
use smartsync_tests::odoo::{FakeOdoo, ODOO_DB, ODOO_KEY, ODOO_LOGIN};
use smartsync_tests::{ADMIN_TOKEN, INGEST_TOKEN, Replica, TestServer, session};

pub const PARTNER_FIELDS: [&str; 4] = ["active", "email", "name", "user_id"];
pub const ORDER_FIELDS: [&str; 5] = ["amount_total", "name", "partner_id", "state", "user_id"];

/// A server that reads `odoo`, sweeping every second and checking ids every second.
pub async fn synced_server(
    odoo: &FakeOdoo,
    adjust: impl FnOnce(&mut smartsync::Config),
) -> TestServer {
    let url = odoo.url.clone();
    TestServer::start_with(move |c| {
        c.odoo.url = url;
        c.odoo.database = ODOO_DB.into();
        c.odoo.login = ODOO_LOGIN.into();
        c.odoo.api_key = Some(ODOO_KEY.into());
        c.odoo.timeout_ms = 5_000;
        c.odoo.sweep_interval = Span::from_secs(1);
        c.odoo.deletion_check_interval = Span::from_secs(1);
        c.odoo.deletion_check_grace = Span::from_secs(0);
        for (model, fields) in [
            ("res.partner", &PARTNER_FIELDS[..]),
            ("sale.order", &ORDER_FIELDS[..]),
        ] {
            c.odoo.models.insert(
                model.into(),
                OdooModelConfig {
                    fields: fields.iter().map(|f| f.to_string()).collect(),
                    track_deletions: true,
                },
            );
        }
        adjust(c);
    })
    .await
}

pub async fn odoo_status(server: &TestServer) -> Value {
    let response = server
        .client
        .get(server.url("/api/v2/admin/odoo"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// Waits until `done` holds of the Odoo status, for at most 30 s.
pub async fn wait_for(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = odoo_status(server).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for {what}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every synced model had a sweep that began after now.
pub async fn next_sweep(server: &TestServer) -> Value {
    let before = odoo_status(server).await;
    let models: Vec<String> = before["models"]
        .as_object()
        .expect("models")
        .keys()
        .cloned()
        .collect();
    let swept_since = |earlier: &Value, status: &Value| {
        models.iter().all(|m| {
            status["models"][m]["last_sweep_at"].is_string()
                && status["models"][m]["last_sweep_at"] != earlier["models"][m]["last_sweep_at"]
        })
    };
    // Two sweeps after `before`: the second began after this call.
    let middle = wait_for(server, "a sweep of every model", |s| {
        swept_since(&before, s)
    })
    .await;
    wait_for(server, "a second sweep of every model", |s| {
        swept_since(&middle, s)
    })
    .await
}

fn manager_pull(device: &str) -> Value {
    json!({"user_id": 42, "device_id": device, "app_type": "manager_app", "limit": 1000})
}

/// What Odoo holds of the synced models, as a device that sees everything should hold it.
fn odoo_view(odoo: &FakeOdoo) -> Vec<(String, i64)> {
    let mut all = Vec::new();
    for model in ["res.partner", "sale.order"] {
        for id in odoo.db.ids(model) {
            all.push((model.to_string(), id));
        }
    }
    all
}

fn replica_keys(replica: &Replica) -> Vec<(String, i64)> {
    replica.records.keys().cloned().collect()
}

#[tokio::test]
async fn records_that_existed_before_reach_every_device_archived_ones_too() {
    let odoo = FakeOdoo::start().await;
    for n in 0..30 {
        odoo.db.insert(
            "res.partner",
            json!({"name": format!("Partner {n}"), "email": format!("p{n}@example.com"),
                   "active": n % 5 != 0, "user_id": 2}),
        );
    }
    for n in 0..20 {
        odoo.db.insert(
            "sale.order",
            json!({"name": format!("S{n:05}"), "state": "draft", "partner_id": 1 + n % 30,
                   "user_id": 2, "amount_total": 10.5 * f64::from(n)}),
        );
    }
    let mut server = synced_server(&odoo, |c| c.odoo.page_size = 7).await;
    let status = wait_for(&server, "the import", |s| {
        s["models"]["res.partner"]["import_finished_at"].is_string()
            && s["models"]["sale.order"]["import_finished_at"].is_string()
    })
    .await;
    assert_eq!(status["connection"], "connected", "{status:#}");
    assert_eq!(status["models"]["res.partner"]["import_read"], 30);
    assert_eq!(status["models"]["res.partner"]["import_stored"], 30);
    assert_eq!(status["models"]["sale.order"]["import_stored"], 20);
    assert!(
        status.to_string().find(ODOO_KEY).is_none(),
        "the key is not shown"
    );

    let mut device = Replica::default();
    device
        .catch_up(&server, &session(42), &manager_pull("tablet"))
        .await;
    assert_eq!(replica_keys(&device), odoo_view(&odoo));
    // One payload format: bare many2one ids, datetimes to the second, the configured fields.
    let order = &device.records[&("sale.order".to_string(), 31)];
    assert_eq!(order["partner_id"], 1);
    assert_eq!(order["id"], 31);
    let written = order["write_date"].as_str().expect("write_date");
    assert_eq!(written.len(), "2024-01-15 10:30:00".len(), "{written}");
    let mut keys: Vec<&str> = order
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "amount_total",
            "id",
            "name",
            "partner_id",
            "state",
            "user_id",
            "write_date"
        ]
    );
    let archived = &device.records[&("res.partner".to_string(), 1)];
    assert_eq!(archived["active"], false);

    // The admin adds a field: every record is imported again, and reaches devices with it.
    server
        .config
        .odoo
        .models
        .get_mut("sale.order")
        .expect("synced")
        .fields
        .push("company_id".into());
    server.restart().await;
    let status = wait_for(&server, "the second import", |s| {
        s["models"]["sale.order"]["import_finished_at"].is_string()
            && s["models"]["sale.order"]["fields"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "company_id"))
    })
    .await;
    assert_eq!(
        status["models"]["sale.order"]["import_stored"], 20,
        "{status:#}"
    );
    device
        .catch_up(&server, &session(42), &manager_pull("tablet"))
        .await;
    let order = &device.records[&("sale.order".to_string(), 31)];
    assert_eq!(order["company_id"], false, "{order}");
    server.stop().await;
}

#[tokio::test]
async fn an_import_stopped_half_way_goes_on_where_it_stopped_storing_nothing_twice() {
    let odoo = FakeOdoo::start().await;
    for n in 0..400 {
        odoo.db.insert(
            "res.partner",
            json!({"name": format!("Partner {n}"), "active": true}),
        );
    }
    odoo.db.set_delay(Duration::from_millis(20));
    let mut server = synced_server(&odoo, |c| {
        c.odoo.page_size = 10;
        c.odoo.models.remove("sale.order");
    })
    .await;
    let status = wait_for(&server, "part of the import", |s| {
        s["models"]["res.partner"]["import"]["read"].as_u64() >= Some(50)
    })
    .await;
    assert!(
        status["models"]["res.partner"]["import_finished_at"].is_null(),
        "stopped while importing: {status:#}"
    );
    // A stop in the middle of the import (the worker is cut between two pages, or in one).
    server.restart().await;
    let status = wait_for(&server, "the import", |s| {
        s["models"]["res.partner"]["import_finished_at"].is_string()
    })
    .await;
    // A page read again after the stop is no new record.
    assert_eq!(status["models"]["res.partner"]["import_stored"], 400);
    let mut device = Replica::default();
    let answers = device
        .catch_up(&server, &session(42), &manager_pull("tablet"))
        .await;
    let events: usize = answers
        .iter()
        .map(|a| a["events"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(events, 400, "every record once");
    assert_eq!(device.records.len(), 400);
    server.stop().await;
}

/// The webhook URL of `server`, as `smartsync odoo connect` writes it into the rules.
fn webhook_url(server: &TestServer, kind: &str) -> String {
    format!(
        "{}?token={INGEST_TOKEN}&event={kind}",
        server.url("/api/v2/webhooks/odoo")
    )
}

#[tokio::test]
async fn the_sweep_brings_back_lost_webhooks_and_a_late_one_is_a_duplicate() {
    let odoo = FakeOdoo::start().await;
    let server = synced_server(&odoo, |c| {
        c.odoo.models.remove("res.partner");
    })
    .await;
    for (trigger, kind) in [
        ("on_create", "create"),
        ("on_write", "write"),
        ("on_unlink", "unlink"),
    ] {
        // As `smartsync odoo connect` makes them: the model's fields and write_date.
        let fields: Vec<&str> = ORDER_FIELDS.iter().copied().chain(["write_date"]).collect();
        odoo.db
            .add_rule("sale.order", trigger, &webhook_url(&server, kind), &fields);
    }
    wait_for(&server, "the import", |s| {
        s["models"]["sale.order"]["import_finished_at"].is_string()
    })
    .await;
    let order = odoo
        .db
        .create(
            "sale.order",
            json!({"name": "S1", "state": "draft", "user_id": 2}),
        )
        .await;
    // Every webhook of the confirmation is lost.
    odoo.db.set_webhook_loss(1000, 7);
    odoo.db
        .write(
            "sale.order",
            order,
            json!({"state": "sale", "amount_total": 99.0}),
        )
        .await;
    let status = next_sweep(&server).await;
    assert_eq!(
        status["models"]["sale.order"]["sweep_recovered"], 1,
        "{status:#}"
    );

    let mut device = Replica::default();
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    let held = &device.records[&("sale.order".to_string(), order)];
    assert_eq!(held["state"], "sale");

    // The lost webhook arrives after all (a proxy that held it): the same version, stored once.
    let record = odoo.db.record("sale.order", order).expect("in Odoo");
    let mut late = serde_json::Map::new();
    late.insert("_model".into(), json!("sale.order"));
    late.insert("_id".into(), json!(order));
    late.insert(
        "_action".into(),
        json!("Smart Sync: sale.order on_write(#102)"),
    );
    for field in ORDER_FIELDS.iter().chain(["write_date"].iter()) {
        late.insert(field.to_string(), record[*field].clone());
    }
    late.insert("id".into(), json!(order));
    let response = server.webhook("&event=write", &Value::Object(late)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["duplicate"], true, "{answer}");
    let again = server.pull_ok(&session(42), &manager_pull("phone")).await;
    assert_eq!(again["events"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn deletions_without_a_webhook_reach_devices() {
    let odoo = FakeOdoo::start().await;
    let ids: Vec<i64> = (0..5)
        .map(|n| {
            odoo.db.insert(
                "res.partner",
                json!({"name": format!("P{n}"), "active": true}),
            )
        })
        .collect();
    let mut server = synced_server(&odoo, |c| {
        c.odoo.models.remove("sale.order");
    })
    .await;
    wait_for(&server, "the import", |s| {
        s["models"]["res.partner"]["import_finished_at"].is_string()
    })
    .await;
    let mut device = Replica::default();
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    assert_eq!(device.records.len(), 5);

    // One record goes by a cascade while the server runs, one while it is down.
    odoo.db.delete_silently("res.partner", ids[1]);
    server
        .stop_for_a_while(|| odoo.db.delete_silently("res.partner", ids[3]))
        .await;
    wait_for(&server, "the ids check", |s| {
        s["models"]["res.partner"]["deletions_recovered"] == 2
    })
    .await;
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    assert_eq!(replica_keys(&device), odoo_view(&odoo));
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_key_or_an_unreachable_odoo_is_reported_and_pulls_go_on() {
    let odoo = FakeOdoo::start().await;
    odoo.db
        .insert("res.partner", json!({"name": "P", "active": true}));
    let server = synced_server(&odoo, |c| {
        c.odoo.api_key = Some("not-the-key-0123456789".into());
    })
    .await;
    let status = wait_for(&server, "the failure", |s| s["connection"] == "failing").await;
    let error = status["error"].as_str().expect("an error");
    assert!(error.contains("refused the login"), "{error}");
    assert!(
        !status.to_string().contains("not-the-key"),
        "the key is not shown"
    );
    // Nothing was imported, and nothing half-done is kept.
    assert!(
        status["models"]["res.partner"]["import_started_at"].is_null(),
        "{status:#}"
    );
    let answer = server.pull_ok(&session(42), &manager_pull("phone")).await;
    assert_eq!(answer["events"], json!([]));
    server.stop().await;

    odoo.db.set_down(true);
    let server = synced_server(&odoo, |_| {}).await;
    let status = wait_for(&server, "the failure", |s| s["connection"] == "failing").await;
    let error = status["error"].as_str().expect("an error");
    assert!(error.contains("cannot be reached"), "{error}");
    server.pull_ok(&session(42), &manager_pull("phone")).await;
    let ready: Value = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(
        ready["status"], "ready",
        "Odoo down does not stop pulls: {ready}"
    );
    assert_eq!(ready["odoo"]["connection"], "failing", "{ready}");
    // Odoo comes back: the worker connects and imports.
    odoo.db.set_down(false);
    wait_for(&server, "the import", |s| {
        s["models"]["res.partner"]["import_finished_at"].is_string()
    })
    .await;
    server.stop().await;
}

/// Runs `smartsync --config <config> odoo <args>` beside the test's runtime.
async fn odoo_command(
    config: &smartsync::Config,
    dir: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let path = dir.join("cli.toml");
    std::fs::write(&path, toml::to_string(config).expect("config as TOML")).expect("write config");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(smartsync_tests::smartsync_bin())
            .arg("--config")
            .arg(&path)
            .arg("odoo")
            .args(&args)
            .output()
            .expect("run smartsync");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("command thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_makes_the_rules_once_and_odoo_then_posts_to_the_server() {
    let odoo = FakeOdoo::start().await;
    let mut server = synced_server(&odoo, |_| {}).await;
    let mut config = server.config.clone();
    config.odoo.webhook_base_url = server.base();
    let dir = server.dir.path().to_path_buf();

    // A rule an admin made by hand after the README, archived since: found and brought back.
    let by_hand = odoo.db.add_rule(
        "sale.order",
        "on_write",
        &format!(
            "{}/api/v2/webhooks/odoo?token=old&event=write",
            server.base()
        ),
        &["name"],
    );
    odoo.db.set_rule_active(by_hand, false);

    let (ok, out, err) = odoo_command(&config, &dir, &["connect", "--dry-run"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("would create"), "{out}");
    assert_eq!(odoo.db.rule_writes(), 0, "a dry run changes nothing");

    let (ok, out, err) = odoo_command(&config, &dir, &["connect"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("Odoo 17.0"), "{out}");
    assert!(out.contains("6 rule(s) created or updated"), "{out}");
    assert!(out.contains("updated (archived"), "{out}");
    assert!(
        !out.contains(INGEST_TOKEN) && !err.contains(INGEST_TOKEN),
        "the token is not shown: {out}"
    );
    let rules = odoo.db.rules();
    assert_eq!(rules.len(), 6, "{rules:#?}");
    for rule in &rules {
        assert!(rule.active, "{rule:?}");
        let kind = match rule.trigger.as_str() {
            "on_create" => "create",
            "on_write" => "write",
            _ => "unlink",
        };
        assert_eq!(
            rule.webhook_url,
            format!(
                "{}/api/v2/webhooks/odoo?token={INGEST_TOKEN}&event={kind}",
                server.base()
            )
        );
        let mut fields = rule.webhook_fields.clone();
        fields.sort();
        let mut wanted: Vec<String> = config.odoo.models[&rule.model].read_fields();
        wanted.sort();
        assert_eq!(fields, wanted, "{rule:?}");
    }
    let writes = odoo.db.rule_writes();

    // Run again: nothing changes.
    let (ok, out, err) = odoo_command(&config, &dir, &["connect"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 rule(s) created or updated"), "{out}");
    assert_eq!(odoo.db.rule_writes(), writes);

    // Odoo now posts every change to the server.
    wait_for(&server, "the import", |s| {
        s["models"]["sale.order"]["import_finished_at"].is_string()
    })
    .await;
    let order = odoo
        .db
        .create(
            "sale.order",
            json!({"name": "S7", "state": "draft", "user_id": 2}),
        )
        .await;
    odoo.db
        .write("sale.order", order, json!({"state": "sale"}))
        .await;
    let status = odoo_status(&server).await;
    assert_eq!(
        status["models"]["sale.order"]["webhooks_received"], 2,
        "{status:#}"
    );
    let mut device = Replica::default();
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    assert_eq!(
        device.records[&("sale.order".to_string(), order)]["state"],
        "sale"
    );

    let (ok, out, err) = odoo_command(&config, &dir, &["status"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("rule on_unlink  present"), "{out}");
    assert!(out.contains("import      finished"), "{out}");

    // An import on demand goes through the running server...
    odoo.db.insert(
        "res.partner",
        json!({"name": "Added by SQL", "active": true}),
    );
    config.server.listen = server.base().trim_start_matches("http://").to_string();
    let (ok, out, err) = odoo_command(&config, &dir, &["import", "res.partner"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("imports res.partner in the background"),
        "{err}"
    );
    assert!(out.contains("imported res.partner"), "{out}");
    let status = odoo_status(&server).await;
    assert_eq!(
        status["models"]["res.partner"]["import_stored"], 1,
        "{status:#}"
    );
    let (ok, _, err) = odoo_command(&config, &dir, &["import", "stock.picking"]).await;
    assert!(!ok && err.contains("not a synced model"), "{err}");
    server.halt().await;

    // ...and runs here when no server does.
    odoo.db.insert(
        "res.partner",
        json!({"name": "Added later", "active": true}),
    );
    let (ok, out, err) = odoo_command(&config, &dir, &["import"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("no server is running, importing here"),
        "{err}"
    );
    assert!(out.contains("res.partner: 2 records read, 1 new"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_wrong_key_or_no_odoo_says_why_and_changes_nothing() {
    let odoo = FakeOdoo::start().await;
    let server = synced_server(&odoo, |_| {}).await;
    let dir = server.dir.path().to_path_buf();
    let mut config = server.config.clone();
    config.odoo.webhook_base_url = server.base();
    config.odoo.api_key = Some("wrong-key-0123456789".into());
    let (ok, out, err) = odoo_command(&config, &dir, &["connect"]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("refused the login"), "{err}");
    assert!(!err.contains("wrong-key"), "the key is not shown: {err}");
    assert_eq!(odoo.db.rule_writes(), 0);

    config.odoo.api_key = Some(ODOO_KEY.into());
    config
        .odoo
        .models
        .get_mut("sale.order")
        .expect("synced")
        .fields
        .push("no_such_field".into());
    let (ok, _, err) = odoo_command(&config, &dir, &["connect"]).await;
    assert!(!ok);
    assert!(err.contains("no field \"no_such_field\""), "{err}");
    assert_eq!(odoo.db.rule_writes(), 0, "nothing half-made");

    config.odoo.url = format!("http://127.0.0.1:{}", smartsync_tests::free_port());
    let (ok, _, err) = odoo_command(&config, &dir, &["connect"]).await;
    assert!(!ok);
    assert!(err.contains("cannot be reached"), "{err}");
    server.stop().await;
}

/// Starts `smartsync serve` with `config` on `port` and waits until it answers.
async fn serve_binary(config_path: &std::path::Path, port: u16) -> std::process::Child {
    let child = std::process::Command::new(smartsync_tests::smartsync_bin())
        .arg("--config")
        .arg(config_path)
        .env("SMARTSYNC_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start smartsync");
    smartsync_tests::wait_until_serving(port).await;
    child
}

async fn binary_status(port: u16) -> Value {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v2/admin/odoo"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_with_sigkill_resumes_and_stores_each_record_once() {
    let odoo = FakeOdoo::start().await;
    for n in 0..2000 {
        odoo.db.insert(
            "res.partner",
            json!({"name": format!("Partner {n}"), "active": true}),
        );
    }
    odoo.db.set_delay(Duration::from_millis(30));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = smartsync_tests::test_config(&dir);
    config.odoo.url = odoo.url.clone();
    config.odoo.database = ODOO_DB.into();
    config.odoo.login = ODOO_LOGIN.into();
    config.odoo.api_key = Some(ODOO_KEY.into());
    config.odoo.page_size = 10;
    config.odoo.models.insert(
        "res.partner".into(),
        OdooModelConfig {
            fields: PARTNER_FIELDS.iter().map(|f| f.to_string()).collect(),
            track_deletions: true,
        },
    );
    let path = dir.path().join("smartsync.toml");
    std::fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write config");

    let port = smartsync_tests::free_port();
    let mut child = serve_binary(&path, port).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = binary_status(port).await;
        let read = status["models"]["res.partner"]["import"]["read"]
            .as_u64()
            .unwrap_or(0);
        if read >= 50 {
            assert!(
                read < 2000,
                "the import should still be running: {status:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no import progress: {status:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let mut child = serve_binary(&path, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = binary_status(port).await;
        if status["models"]["res.partner"]["import_finished_at"].is_string() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the import did not finish: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["models"]["res.partner"]["import_stored"], 2000,
        "{status:#}"
    );
    let client = reqwest::Client::new();
    let mut events = 0;
    let mut records = std::collections::BTreeSet::new();
    loop {
        let answer: Value = client
            .post(format!("http://127.0.0.1:{port}/api/v2/sync/pull"))
            .header("X-Session-Id", session(42))
            .json(&manager_pull("tablet"))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("json");
        for event in answer["events"].as_array().expect("events") {
            events += 1;
            records.insert(event["record_id"].as_i64().expect("id"));
        }
        if answer["has_more"] != true {
            break;
        }
    }
    assert_eq!((events, records.len()), (2000, 2000), "every record, once");
    child.kill().expect("stop");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_odoo_refused_after_posting_it_is_undone_on_devices() {
    let odoo = FakeOdoo::start().await;
    let server = synced_server(&odoo, |c| {
        c.odoo.models.remove("res.partner");
        // Only the check of announced deletions can bring the record back.
        c.odoo.deletion_check_interval = Span::from_secs(0);
    })
    .await;
    let mut config = server.config.clone();
    config.odoo.webhook_base_url = server.base();
    smartsync::odoo::commands::connect(&config, false)
        .await
        .expect("connect");
    let order = odoo
        .db
        .create(
            "sale.order",
            json!({"name": "S9", "state": "sale", "user_id": 2}),
        )
        .await;
    odoo.db.unlink_refused("sale.order", order).await;
    let mut device = Replica::default();
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !device
        .records
        .contains_key(&("sale.order".to_string(), order))
    {
        assert!(
            Instant::now() < deadline,
            "the refused deletion was never undone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        device
            .catch_up(&server, &session(42), &manager_pull("phone"))
            .await;
    }
    assert_eq!(
        device.records[&("sale.order".to_string(), order)]["state"],
        "sale"
    );
    // A deletion Odoo did make stays.
    odoo.db.unlink("sale.order", order).await;
    next_sweep(&server).await;
    device
        .catch_up(&server, &session(42), &manager_pull("phone"))
        .await;
    assert!(device.records.is_empty(), "{:?}", device.records);
    server.stop().await;
}

#[tokio::test]
async fn a_model_odoo_refuses_does_not_hold_up_the_others() {
    let odoo = FakeOdoo::start().await;
    odoo.db
        .insert("sale.order", json!({"name": "S1", "state": "draft"}));
    let server = synced_server(&odoo, |c| {
        c.odoo
            .models
            .get_mut("res.partner")
            .expect("synced")
            .fields
            .push("no_such_field".into());
    })
    .await;
    let status = wait_for(&server, "the other model's import", |s| {
        s["models"]["sale.order"]["import_finished_at"].is_string()
            && s["models"]["res.partner"]["error"].is_string()
    })
    .await;
    assert_eq!(status["connection"], "connected", "{status:#}");
    let error = status["models"]["res.partner"]["error"]
        .as_str()
        .expect("error");
    assert!(
        error.contains("no_such_field") && error.contains("res.partner"),
        "{error}"
    );
    server.stop().await;
}
