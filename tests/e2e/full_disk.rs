//! A full disk: ingest is refused with 503 `storage_full`, nothing acknowledged is lost, and the
//! server carries on by itself once space is freed.
//!
//! The disk really fills: the server runs in a mount namespace of its own (`unshare --user
//! --map-root-user --mount`, which needs no privileges where the kernel allows user namespaces,
//! as Debian's does), with its database on an 80 MiB tmpfs of which a ballast file takes 77. The
//! test frees space by deleting the ballast through `/proc/<pid>/root`: that is enough for
//! `/readyz` to see room again without an append (64 MiB free).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync_tests::{event_ids, free_port, sigterm, smartsync_bin};

const TOKEN: &str = "full-disk-ingest-token-0123456789";

#[tokio::test]
async fn a_full_disk_refuses_ingest_until_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mount point");
    let port = free_port();
    // `sh -c SCRIPT DISK BIN`: mount the small disk, fill half of it, become the server.
    let script = "mount -t tmpfs -o size=80m tmpfs \"$0\" \
                  && head -c 80740352 /dev/zero > \"$0/ballast\" \
                  && exec \"$1\" serve";
    let mut child = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .arg(&disk)
        .arg(smartsync_bin())
        .current_dir(dir.path())
        .env("SMARTSYNC_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "SMARTSYNC_DATABASE__URL",
            format!("sqlite://{}/smartsync.db", disk.display()),
        )
        .env("SMARTSYNC_SECRETS__INGEST_TOKEN", TOKEN)
        .env("SMARTSYNC_RETENTION__MAX_AGE", "0")
        .env("SMARTSYNC_SERVER__MAX_BODY_BYTES", "16777216")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            panic!(
                "the server did not start in its own mount namespace ({status}); this test needs \
                 user namespaces (sysctl kernel.unprivileged_userns_clone=1): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ingest = |first: i64, count: i64| {
        let events: Vec<Value> = (first..first + count)
            .map(|i| {
                json!({"model": "res.partner", "record_id": i, "event": "write",
                       "payload": {"comment": "x".repeat(20_000)}})
            })
            .collect();
        client
            .post(format!("{base}/api/v2/events"))
            .bearer_auth(TOKEN)
            .json(&json!({ "events": events }))
            .send()
    };
    // A batch larger than the free space fills the disk in the middle of its transaction
    // (SQLite then rolls the whole transaction back); it is refused whole.
    let too_large = ingest(100_001, 250).await.expect("ingest");
    assert_eq!(too_large.status(), 503);
    let answer: Value = too_large.json().await.expect("json");
    assert_eq!(answer["code"], "storage_full", "{answer}");

    // Small batches fill the disk at their commit.
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut refused = None;
    for batch in 0..100 {
        let response = ingest(batch * 10 + 1, 10).await.expect("ingest");
        if response.status() == 200 {
            let answer: Value = response.json().await.expect("json");
            acknowledged.extend(
                answer["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|id| id.as_i64().expect("id")),
            );
        } else {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"30"[..])
    );
    let answer: Value = refused.json().await.expect("json");
    assert_eq!(answer["code"], "storage_full", "{answer}");
    assert!(
        !acknowledged.is_empty(),
        "some events fitted before the disk filled"
    );
    for _ in 0..3 {
        let again = ingest(10_001, 10).await.expect("ingest");
        assert_eq!(again.status(), 503);
    }
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["code"], "storage_full");

    // Every acknowledged event is served, and nothing else.
    let pull: Value = client
        .post(format!("{base}/api/v2/sync/pull"))
        .header("X-Session-Id", "dev-session-2")
        .json(&json!({"user_id": 2, "device_id": "d", "app_type": "manager_app", "limit": 1000}))
        .send()
        .await
        .expect("pull")
        .json()
        .await
        .expect("json");
    assert_eq!(event_ids(&pull), acknowledged);

    // Space is freed: the server is ready again before any append, and the same batch is
    // taken, without a restart.
    let ballast = format!("/proc/{}/root{}/ballast", child.id(), disk.display());
    std::fs::remove_file(&ballast).expect("delete the ballast");
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let taken = ingest(10_001, 10).await.expect("ingest");
    assert_eq!(taken.status(), 200, "{:?}", taken.text().await);

    sigterm(&child);
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "clean exit: {}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("storage_full").count(), 1, "said once: {log}");
    assert_eq!(log.matches("has room again").count(), 1, "said once: {log}");
    assert!(!log.contains("internal error"), "{log}");
}
