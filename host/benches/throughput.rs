//! HTTP throughput of the sync server, each beside a bare axum endpoint answering the same bytes
//! (the ceiling), measured in one run:
//!
//! - pulls/s of 100-event pages (served from the in-memory tail, and with the tail disabled so
//!   that every pull reads SQLite);
//! - single-event Odoo webhooks/s (group commit);
//! - events/s of 1000-event batches on `POST /api/v2/events`.
//!
//! `cargo bench -p smartsync-host --bench throughput`; `BENCH_SECS` (default 5) and
//! `BENCH_CONNECTIONS` (default 64) tune a run; `BENCH_ONLY=webhook` runs the cases whose label
//! contains it; `BENCH_SYNCHRONOUS=normal` sets `database.synchronous` (default `full`). Results go to stdout as a Markdown table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};
use smartsync::Config;
use smartsync::config::StaticSession;
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::{INGEST_TOKEN, TOKEN_SECRET, env_number, post_json};

const SESSION: &str = "bench-session";

/// Whether a case runs: all of them, or those whose label contains `BENCH_ONLY`.
fn wanted(label: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

/// One kind of request, sent over and over: the request for connection `c`, request `n`.
type MakeRequest = Arc<dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Drives `connections` keep-alive HTTP/1.1 connections for `secs`; answers requests/s.
async fn load(addr: std::net::SocketAddr, connections: usize, secs: u64, make: MakeRequest) -> f64 {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (done, count, failures, make) =
            (done.clone(), count.clone(), failures.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = TcpStream::connect(addr).await else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = stream.set_nodelay(true);
            let io = hyper_util::rt::TokioIo::new(stream);
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            tokio::spawn(conn);
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let response = match sender.send_request(make(c, n)).await {
                    Ok(response) => response,
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let ok = response.status().is_success();
                if !ok {
                    eprintln!("request failed: HTTP {}", response.status());
                }
                if response.into_body().collect().await.is_err() || !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let counted = count.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let failed = failures.load(Ordering::Relaxed);
    assert!(failed == 0, "{failed} requests failed");
    counted as f64 / elapsed
}

/// A bare axum server answering every POST with `body`.
async fn bare(body: Bytes) -> std::net::SocketAddr {
    // The request body is read, as the real server reads it, so the connection can be reused.
    let router = Router::new()
        .fallback(post(move |_request: Bytes| {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A server on a fresh database; `plugin` is (app_type, plugin name, its limits table) of a
/// bundled plugin built in target/wasm32-wasip2/release, the only one enabled. Without it
/// app_types use model lists.
async fn smartsync_server(
    dir: &tempfile::TempDir,
    tail_events: usize,
    plugin: Option<(&str, &str, &str)>,
) -> smartsync::Server {
    let mut config = Config::embedded();
    config.plugins.file = dir.path().join("plugins.toml");
    if let Some((app_type, name, limits)) = plugin {
        let entry = common::plugin_entry(app_type, name);
        std::fs::write(
            &config.plugins.file,
            format!("{entry}[plugins.{name}.limits]\n{limits}\n"),
        )
        .expect("plugins.toml");
    }
    config.database.url = format!("sqlite://{}/smartsync.db", dir.path().display());
    config.secrets.ingest_token = Some(INGEST_TOKEN.into());
    config.secrets.token_secret = Some(TOKEN_SECRET.into());
    config.auth.sessions = [(SESSION.to_string(), StaticSession::Uid(5))]
        .into_iter()
        .collect();
    config.database.tail_events = tail_events;
    if let Ok(synchronous) = std::env::var("BENCH_SYNCHRONOUS") {
        config.database.synchronous = synchronous;
    }
    config.log.level = "warn".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    smartsync::start_on(config, listener)
        .await
        .expect("server starts")
}

/// A picking ready for delivery, as the delivery_app plugin sees it.
fn picking(i: i64) -> Value {
    json!({"model": "stock.picking", "record_id": i, "event": "write",
           "payload": {"id": i, "name": format!("WH/OUT/{i:05}"), "partner_id": 7, "user_id": 5,
                       "company_id": 1, "state": "assigned", "picking_type_code": "outgoing",
                       "scheduled_date": "2024-01-15 10:30:00", "write_date": "2024-01-15 10:30:00",
                       "origin": "S00042", "note": false}})
}

/// An invoice of company 1, as the manager_app plugin sees it.
fn invoice(i: i64) -> Value {
    json!({"model": "account.move", "record_id": i, "event": "write",
           "payload": {"id": i, "name": format!("INV/2024/{i:05}"), "partner_id": 7, "user_id": 5,
                       "company_id": 1, "state": "posted", "amount_total": 1250.5,
                       "invoice_date": "2024-01-15", "write_date": "2024-01-15 10:30:00",
                       "ref": "PO-2024-0042", "narration": false}})
}

/// A sales_app order payload of realistic size (~300 bytes).
fn order(i: i64) -> Value {
    json!({"model": "sale.order", "record_id": i, "event": "write",
           "payload": {"id": i, "name": format!("S{i:05}"), "partner_id": 7, "user_id": 5,
                       "company_id": 1, "state": "sale", "amount_total": 1250.5,
                       "date_order": "2024-01-15 10:30:00", "write_date": "2024-01-15 10:30:00",
                       "client_order_ref": "PO-2024-0042", "note": false}})
}

async fn ingest(addr: std::net::SocketAddr, events: Vec<Value>) {
    let client = reqwest::Client::new();
    for chunk in events.chunks(1000) {
        let response = client
            .post(format!("http://{addr}/api/v2/events"))
            .bearer_auth(INGEST_TOKEN)
            .json(&json!({"events": chunk}))
            .send()
            .await
            .expect("ingest");
        assert!(response.status().is_success());
    }
}

/// Pull requests that each resume from the start of a 100-event page, so every pull answers
/// 100 events; each connection is its own device.
async fn pull_requests(
    addr: std::net::SocketAddr,
    connections: usize,
    app_type: &str,
) -> (MakeRequest, Bytes) {
    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    let mut sample = Bytes::new();
    for c in 0..connections {
        let mut body = json!({"user_id": 5, "device_id": format!("bench-{c}"), "app_type": app_type, "limit": 100});
        // A first pull from the beginning gives a token for position 0 of this device.
        let first: Value = client
            .post(format!("http://{addr}/api/v2/sync/pull"))
            .header("X-Session-Id", SESSION)
            .json(&json!({"user_id": 5, "device_id": format!("bench-{c}"), "app_type": app_type, "limit": 1}))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("json");
        let token_at_1 = first["next_sync_token"].clone();
        body["sync_token"] = token_at_1;
        let answer = client
            .post(format!("http://{addr}/api/v2/sync/pull"))
            .header("X-Session-Id", SESSION)
            .json(&body)
            .send()
            .await
            .expect("pull")
            .bytes()
            .await
            .expect("body");
        let parsed: Value = serde_json::from_slice(&answer).expect("json");
        assert_eq!(parsed["new_events_count"], 100, "a full page");
        sample = answer;
        bodies.push(Bytes::from(body.to_string()));
    }
    let make: MakeRequest = Arc::new(move |c, _| {
        post_json(
            "/api/v2/sync/pull",
            &[("x-session-id", SESSION)],
            bodies[c].clone(),
        )
    });
    (make, sample)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = env_number("BENCH_SECS", 5);
    let connections = env_number("BENCH_CONNECTIONS", 64) as usize;
    let mut rows: Vec<(String, f64, f64, &str)> = Vec::new();

    // Pulls: from the in-memory tail, through each bundled plugin, and with the tail disabled.
    // Every device is user 5 of the same companies, so the plugins' answers are shared by all
    // (the answer cache); one row turns the cache off, so that each pull calls the plugin.
    type Make = fn(i64) -> Value;
    // The plugin's name and its limits table.
    type Plugin = Option<(&'static str, &'static str)>;
    const NO_REUSE: &str = "answer_cache_mb = 0";
    let cases: [(&str, &str, Plugin, usize, Make); 6] = [
        (
            "pull, 100-event page, no plugin",
            "sales_app",
            None,
            20_000,
            order,
        ),
        (
            "pull, 100-event page, sales_app plugin",
            "sales_app",
            Some(("sales_app", "")),
            20_000,
            order,
        ),
        (
            "pull, 100-event page, delivery_app plugin",
            "delivery_app",
            Some(("delivery_app", "")),
            20_000,
            picking,
        ),
        (
            "pull, 100-event page, manager_app plugin",
            "manager_app",
            Some(("manager_app", "")),
            20_000,
            invoice,
        ),
        (
            "pull, 100-event page, manager_app plugin, answers not reused (plugin called per pull)",
            "manager_app",
            Some(("manager_app", NO_REUSE)),
            20_000,
            invoice,
        ),
        (
            "pull, 100-event page, no plugin, tail disabled (SQLite read per pull)",
            "sales_app",
            None,
            1,
            order,
        ),
    ];
    for (label, app_type, plugin, tail, make_event) in cases {
        if !wanted(label) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let server = smartsync_server(
            &dir,
            tail,
            plugin.map(|(name, limits)| (app_type, name, limits)),
        )
        .await;
        ingest(server.addr(), (1..=2000).map(make_event).collect()).await;
        let (make, sample) = pull_requests(server.addr(), connections, app_type).await;
        let make_ceiling = make.clone();
        let measured = load(server.addr(), connections, secs, make).await;
        let ceiling_addr = bare(sample.clone()).await;
        let ceiling = load(ceiling_addr, connections, secs, make_ceiling).await;
        eprintln!(
            "{label}: {measured:.0}/s, bare axum {ceiling:.0}/s ({} bytes)",
            sample.len()
        );
        rows.push((label.to_string(), measured, ceiling, "pulls/s"));
        server.shutdown().await.expect("shutdown");
    }

    // Single-event webhooks, each a new record.
    if wanted("single-event Odoo webhook") {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = smartsync_server(&dir, 20_000, None).await;
        let path: &'static str = Box::leak(
            format!("/api/v2/webhooks/odoo?token={INGEST_TOKEN}&event=write").into_boxed_str(),
        );
        let make: MakeRequest = Arc::new(move |c, n| {
            let id = (c as u64) * 10_000_000 + n + 1;
            let body = json!({"_action": "Smart Sync(#1)", "_id": id, "_model": "res.partner",
                              "id": id, "name": "Customer", "write_date": "2024-01-15 10:30:00"});
            post_json(path, &[], Bytes::from(body.to_string()))
        });
        let measured = load(server.addr(), connections, secs, make.clone()).await;
        let ceiling_addr = bare(Bytes::from_static(
            br#"{"duplicate":false,"id":1,"status":"success"}"#,
        ))
        .await;
        let ceiling = load(ceiling_addr, connections, secs, make).await;
        eprintln!("webhooks: {measured:.0}/s, bare axum {ceiling:.0}/s");
        rows.push((
            "single-event Odoo webhook".into(),
            measured,
            ceiling,
            "requests/s",
        ));
        server.shutdown().await.expect("shutdown");
    }

    // 1000-event batches.
    if wanted("1000-event batch ingest") {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = smartsync_server(&dir, 20_000, None).await;
        let batch =
            Bytes::from(json!({"events": (1..=1000).map(order).collect::<Vec<_>>()}).to_string());
        let auth: &'static str = Box::leak(format!("Bearer {INGEST_TOKEN}").into_boxed_str());
        let sent = batch.clone();
        let make: MakeRequest = Arc::new(move |_, _| {
            post_json("/api/v2/events", &[("authorization", auth)], sent.clone())
        });
        let batch_connections = 4;
        let measured = load(server.addr(), batch_connections, secs, make.clone()).await;
        let answer = Bytes::from(
            json!({"status": "success", "ids": (1..=1000).collect::<Vec<i64>>(), "duplicates": 0})
                .to_string(),
        );
        let ceiling_addr = bare(answer).await;
        let ceiling = load(ceiling_addr, batch_connections, secs, make).await;
        eprintln!(
            "batches: {:.0} events/s, bare axum {:.0} events/s",
            measured * 1000.0,
            ceiling * 1000.0
        );
        rows.push((
            "1000-event batch ingest".into(),
            measured * 1000.0,
            ceiling * 1000.0,
            "events/s",
        ));
        server.shutdown().await.expect("shutdown");
    }

    println!(
        "| measured ({secs} s, {connections} connections; batches 4) | smartsync | bare axum, same bytes | ratio |"
    );
    println!("|---|---|---|---|");
    for (label, measured, ceiling, unit) in rows {
        println!(
            "| {label} | {measured:.0} {unit} | {ceiling:.0} {unit} | {:.0} % |",
            100.0 * measured / ceiling
        );
    }
}
