//! The `smartsync` binary itself: config errors, the example, and a graceful SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync_tests::{free_port, smartsync_bin, stop};

#[test]
fn config_example_prints_a_config_that_loads() {
    let out = Command::new(smartsync_bin())
        .args(["config", "example"])
        .output()
        .expect("run smartsync");
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("smartsync.toml");
    std::fs::write(&path, &out.stdout).expect("write");
    let check = Command::new(smartsync_bin())
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .expect("run smartsync");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_bad_config_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sync]\nmax_limt = 5\n").expect("write");
    let out = Command::new(smartsync_bin())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("run smartsync");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_limt"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");

    let out = Command::new(smartsync_bin())
        .current_dir(dir.path())
        .env("SMARTSYNC_SERVER__LISTEN", "not an address")
        .args(["config", "check"])
        .output()
        .expect("run smartsync");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");
}

/// Starts the real `smartsync serve` in `dir` (the embedded default, plus any plugins.toml the
/// test put there) on `port`, and waits until it answers.
async fn serve(dir: &std::path::Path, port: u16, stderr: Stdio) -> std::process::Child {
    let child = Command::new(smartsync_bin())
        .current_dir(dir)
        .env("SMARTSYNC_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start smartsync");
    smartsync_tests::wait_until_serving(port).await;
    child
}

/// The ingest token the embedded default generated beside its database, under ./data/.
fn ingest_token(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("data/secrets.toml"))
        .expect("secrets")
        .lines()
        .find_map(|l| l.strip_prefix("ingest_token = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ingest token")
        .to_string()
}

#[tokio::test]
async fn serve_on_the_embedded_default_then_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = serve(dir.path(), port, Stdio::piped()).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let token = ingest_token(dir.path());
    let hook = client
        .post(format!("{base}/api/v2/webhooks/odoo?token={token}"))
        .json(
            &json!({"_model": "res.partner", "_id": 7, "_action": "x(#1)", "id": 7,
                      "create_date": "2024-01-15 10:30:00", "write_date": "2024-01-15 10:30:00"}),
        )
        .send()
        .await
        .expect("webhook");
    assert_eq!(hook.status(), 200);
    let pull: Value = client
        .post(format!("{base}/api/v2/sync/pull"))
        .header("X-Session-Id", "dev-session-5")
        .json(
            &json!({"user_id": 5, "device_id": "android-1", "app_type": "sales_app", "limit": 100}),
        )
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("json");
    assert_eq!(pull["new_events_count"], 1);

    let status = stop(&mut child);
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(
        stderr.contains("not for production") || stderr.contains("Do not use this in production"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the log must not contain the ingest token"
    );
    assert!(
        !stderr.contains("dev-session-5"),
        "the log must not contain session ids"
    );

    // Start again: the device's position was written on the way down.
    let mut child = serve(dir.path(), port, Stdio::null()).await;
    let state: Value = client
        .get(format!(
            "{base}/api/v2/sync/state?user_id=5&device_id=android-1"
        ))
        .header("X-Session-Id", "dev-session-5")
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["last_event_id"], 1);
    assert_eq!(state["sync_count"], 1);
    stop(&mut child);
}

#[test]
fn plugin_check_and_run_try_a_plugin_without_a_server() {
    let wasm = smartsync_tests::plugin_wasm("delivery_app");
    let check = Command::new(smartsync_bin())
        .args(["plugin", "check"])
        .arg(&wasm)
        .output()
        .expect("run smartsync");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("\"stock.picking\""), "{stdout}");
    assert!(stdout.contains("ok: delivery_app@"), "{stdout}");

    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.json");
    let context = dir.path().join("context.json");
    std::fs::write(
        &events,
        json!([
            {"id": 1, "model": "stock.picking", "record_id": 7, "event": "write",
             "payload": {"state": "assigned", "user_id": 42}},
            {"id": 2, "model": "stock.picking", "record_id": 8, "event": "write",
             "payload": {"state": "done", "user_id": 9}},
            {"id": 3, "model": "sale.order", "record_id": 9, "event": "write"},
        ])
        .to_string(),
    )
    .expect("write events");
    std::fs::write(
        &context,
        json!({"user_id": 42, "config": {"only_assigned_to_me": true}}).to_string(),
    )
    .expect("write context");
    let run = Command::new(smartsync_bin())
        .args(["plugin", "run"])
        .arg(&wasm)
        .arg("--events")
        .arg(&events)
        .arg("--context")
        .arg(&context)
        .output()
        .expect("run smartsync");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let shaped: Value = serde_json::from_slice(&run.stdout).expect("JSON out");
    assert_eq!(shaped.as_array().map(Vec::len), Some(1), "{shaped}");
    assert_eq!(shaped[0]["record_id"], 7);
    assert_eq!(shaped[0]["data"]["status"], "ready");

    // A config the plugin does not know is refused when it is loaded, naming the key.
    std::fs::write(
        &context,
        json!({"user_id": 42, "config": {"colour": "red"}}).to_string(),
    )
    .expect("write context");
    let bad = Command::new(smartsync_bin())
        .args(["plugin", "run"])
        .arg(&wasm)
        .arg("--events")
        .arg(&events)
        .arg("--context")
        .arg(&context)
        .output()
        .expect("run smartsync");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("refuses its config") && stderr.contains("colour"),
        "{stderr}"
    );

    let missing = Command::new(smartsync_bin())
        .args(["plugin", "check", "/nonexistent/plugin.wasm"])
        .output()
        .expect("run smartsync");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/plugin.wasm")
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn memory_bombs_are_stopped_and_the_memory_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    std::fs::write(
        dir.path().join("plugins.toml"),
        format!(
            "[plugins.bomb]\napp_type = \"bomb_app\"\nwasm = {:?}\nconfig = {{ mode = \"memory\" }}\nlimits = {{ memory_mb = 64, time_ms = 10000, quarantine_after = 1000 }}\n",
            smartsync_tests::plugin_wasm("hostile").display().to_string()
        ),
    )
    .expect("plugins.toml");
    let mut child = serve(dir.path(), port, Stdio::null()).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let token = ingest_token(dir.path());
    let hook = client
        .post(format!(
            "{base}/api/v2/webhooks/odoo?token={token}&event=write"
        ))
        .json(&json!({"_model": "res.partner", "_id": 1, "_action": "x(#1)", "id": 1}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(hook.status(), 200);
    let bomb = || {
        client
            .post(format!("{base}/api/v2/sync/pull"))
            .header("X-Session-Id", "dev-session-5")
            .json(&json!({"user_id": 5, "device_id": "d", "app_type": "bomb_app"}))
            .send()
    };
    let first: Value = bomb().await.expect("pull").json().await.expect("json");
    assert_eq!(first["kind"], "out_of_memory", "{first}");
    let before = rss_kib(child.id());
    for _ in 0..10 {
        let answer: Value = bomb().await.expect("pull").json().await.expect("json");
        assert_eq!(answer["kind"], "out_of_memory", "{answer}");
    }
    let after = rss_kib(child.id());
    // Ten bombs of 64 MiB each; what stays is far less than one of them.
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB after ten memory bombs"
    );
    stop(&mut child);
}

#[tokio::test]
async fn plugin_replay_shows_what_a_device_would_get_without_moving_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    std::fs::write(
        dir.path().join("plugins.toml"),
        format!(
            "[plugins.sales_app]\napp_type = \"sales_app\"\nwasm = {:?}\n",
            smartsync_tests::plugin_wasm("sales_app")
                .display()
                .to_string()
        ),
    )
    .expect("plugins.toml");
    let mut child = serve(dir.path(), port, Stdio::null()).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let token = ingest_token(dir.path());
    for id in 1..=3 {
        let hook = client
            .post(format!(
                "{base}/api/v2/webhooks/odoo?token={token}&event=write"
            ))
            .json(&json!({"_model": "sale.order", "_id": id, "_action": "x(#1)", "id": id}))
            .send()
            .await
            .expect("webhook");
        assert_eq!(hook.status(), 200);
    }
    let pull = |limit: i64| {
        client
            .post(format!("{base}/api/v2/sync/pull"))
            .header("X-Session-Id", "dev-session-5")
            .json(&json!({"user_id": 5, "device_id": "android-1", "app_type": "sales_app", "limit": limit}))
            .send()
    };
    let first: Value = pull(1).await.expect("pull").json().await.expect("json");
    assert_eq!(first["events"][0]["record_id"], 1);
    // Positions reach the database within sync.position_flush_ms.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let replay = || {
        Command::new(smartsync_bin())
            .current_dir(dir.path())
            .args([
                "plugin",
                "replay",
                "--app-type",
                "sales_app",
                "--user-id",
                "5",
                "--device-id",
                "android-1",
            ])
            .output()
            .expect("run smartsync")
    };
    for _ in 0..2 {
        let out = replay();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON out");
        let ids: Vec<i64> = answer["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["record_id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, vec![2, 3], "{answer}");
    }
    // The device did not move.
    let second: Value = pull(10).await.expect("pull").json().await.expect("json");
    assert_eq!(second["events"][0]["record_id"], 2);

    let bad = Command::new(smartsync_bin())
        .current_dir(dir.path())
        .args([
            "plugin",
            "replay",
            "--app-type",
            "nope_app",
            "--user-id",
            "5",
        ])
        .output()
        .expect("run smartsync");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown_app_type"));
    stop(&mut child);
}

/// Waits up to `limit` for `child` to exit; kills it and answers `None` if it did not.
fn exit_within(mut child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut first = serve(dir.path(), port, Stdio::null()).await;
    let holder = format!("pid {}", first.id());

    for command in [&["serve"][..], &["migrate"][..]] {
        let second = Command::new(smartsync_bin())
            .current_dir(dir.path())
            .env(
                "SMARTSYNC_SERVER__LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a second smartsync");
        let out = exit_within(second, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("`smartsync {command:?}` ran beside a running server"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        assert!(
            stderr.contains("data/smartsync.db"),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains(&holder), "{command:?}: {stderr}");
    }

    // The first server is unharmed: it takes events and serves them.
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let token = ingest_token(dir.path());
    let hook = client
        .post(format!(
            "{base}/api/v2/webhooks/odoo?token={token}&event=write"
        ))
        .json(&json!({"_model": "res.partner", "_id": 7, "id": 7}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(hook.status(), 200);
    let pull: Value = client
        .post(format!("{base}/api/v2/sync/pull"))
        .header("X-Session-Id", "dev-session-5")
        .json(&json!({"user_id": 5, "device_id": "a", "app_type": "sales_app"}))
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("json");
    assert_eq!(pull["new_events_count"], 1, "{pull}");

    // Once it has stopped, the database is free again.
    stop(&mut first);
    let mut again = serve(dir.path(), port, Stdio::null()).await;
    stop(&mut again);
}
