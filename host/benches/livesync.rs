//! Live sync under many waiting clients, against the real `smartsync` binary:
//!
//! - the server's RSS at idle, and with `BENCH_WAITERS` (default 10,000) long-polling pulls held;
//! - latency from ingest to a long-polling client: `BENCH_ROUNDS` (default 200) times, one
//!   `stock.picking` is posted to `POST /api/v2/events` while every client waits; the 10
//!   delivery_app devices it is for are timed from just before the ingest request is sent to
//!   the moment each has read its answer. The other waiters are sales_app devices, which a
//!   picking does not wake;
//! - then one `sale.order` that wakes every sales_app waiter at once (a broadcast), timed the
//!   same way (`BENCH_BROADCAST=0` leaves it out).
//!
//! The bundled sales_app and delivery_app plugins shape the feeds (build them first with
//! `scripts/build-plugins`). `cargo bench -p smartsync-host --bench livesync`. Needs about
//! 2 × BENCH_WAITERS open files in all: the server raises its own limit, this process needs
//! `ulimit -n` above BENCH_WAITERS.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

mod common;
use common::{INGEST_TOKEN, TOKEN_SECRET, env_number, plugin_entry, post_json};

/// Delivery devices a picking is for.
const DELIVERY_DEVICES: usize = 10;

/// The server process; killed when dropped.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Resident and peak resident memory, in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .expect("memory field")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

async fn start_server(dir: &tempfile::TempDir) -> ServerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let plugins = dir.path().join("plugins.toml");
    std::fs::write(
        &plugins,
        plugin_entry("sales_app", "sales_app") + &plugin_entry("delivery_app", "delivery_app"),
    )
    .expect("plugins.toml");
    let config = dir.path().join("smartsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[database]
url = "sqlite://{db}"
[secrets]
ingest_token = "{INGEST_TOKEN}"
token_secret = "{TOKEN_SECRET}"
admin_token = "bench-admin-token-0123456789"
[auth]
mode = "static"
[auth.sessions]
"session-5" = 5
"session-42" = 42
[plugins]
file = {plugins:?}
[log]
level = "warn"
"#,
            db = dir.path().join("smartsync.db").display(),
            plugins = plugins.display().to_string(),
        ),
    )
    .expect("smartsync.toml");
    // BENCH_SERVER_WRAPPER runs the server under a profiler, such as `heaptrack -o /tmp/hp`
    // (the RSS figures are then the wrapper's).
    let wrapper = std::env::var("BENCH_SERVER_WRAPPER").unwrap_or_default();
    let mut argv: Vec<String> = wrapper.split_whitespace().map(String::from).collect();
    argv.push(env!("CARGO_BIN_EXE_smartsync").to_string());
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--config", &config.display().to_string(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start smartsync");
    let server = ServerProcess {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    };
    let client = reqwest::Client::new();
    // Up to a minute: the first start compiles the plugins.
    for _ in 0..1200 {
        if client
            .get(format!("http://{}/readyz", server.addr))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

fn pull_request(session: &str, body: &Value) -> Request<Full<Bytes>> {
    post_json(
        "/api/v2/sync/pull",
        &[("x-session-id", session)],
        Bytes::from(body.to_string()),
    )
}

/// A device that long-polls over its own connection and reports when each answer with events
/// has been read.
async fn waiter(
    addr: std::net::SocketAddr,
    user: i64,
    device: String,
    app_type: &'static str,
    connecting: Arc<Semaphore>,
    connected: Arc<AtomicUsize>,
    answered: mpsc::UnboundedSender<Instant>,
) {
    let (mut sender, conn) = {
        let _slot = connecting.acquire().await.expect("semaphore");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake")
    };
    connected.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(conn);
    let session = format!("session-{user}");
    let body = json!({"user_id": user, "device_id": device, "app_type": app_type, "wait": 60});
    loop {
        let Ok(response) = sender.send_request(pull_request(&session, &body)).await else {
            return;
        };
        let status = response.status();
        let Ok(bytes) = response.into_body().collect().await.map(|b| b.to_bytes()) else {
            return;
        };
        let read = Instant::now();
        assert!(status.is_success(), "pull failed: HTTP {status}");
        let answer: Value = serde_json::from_slice(&bytes).expect("pull answer");
        if answer["new_events_count"].as_u64().unwrap_or(0) > 0 && answered.send(read).is_err() {
            return;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(0.0),
        samples.len()
    )
}

async fn ingest(client: &reqwest::Client, addr: std::net::SocketAddr, model: &str, id: i64) {
    let response = client
        .post(format!("http://{addr}/api/v2/events"))
        .bearer_auth(INGEST_TOKEN)
        .json(
            &json!({"events": [{"model": model, "record_id": id, "event": "create",
            "payload": {"id": id, "name": format!("WH/OUT/{id:05}"), "state": "assigned",
                        "picking_type_code": "outgoing", "user_id": [5, "Sales"]}}]}),
        )
        .send()
        .await
        .expect("ingest");
    assert!(
        response.status().is_success(),
        "ingest: {}",
        response.status()
    );
}

/// Waits until `n` answers arrived; their latencies from `sent`, in ms.
async fn collect(
    answers: &mut mpsc::UnboundedReceiver<Instant>,
    n: usize,
    sent: Instant,
) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(n);
    while latencies.len() < n {
        let read = tokio::time::timeout(Duration::from_secs(120), answers.recv())
            .await
            .expect("every waiter answered")
            .expect("waiters alive");
        latencies.push(read.duration_since(sent).as_secs_f64() * 1000.0);
    }
    latencies
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let waiters = env_number("BENCH_WAITERS", 10_000) as usize;
    let rounds = env_number("BENCH_ROUNDS", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(&dir).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = server.rss_mib();
    println!("RSS at idle: {idle:.1} MiB");

    let client = reqwest::Client::new();
    let connecting = Arc::new(Semaphore::new(256));
    let connected = Arc::new(AtomicUsize::new(0));
    let (to_sales, mut sales_answers) = mpsc::unbounded_channel();
    let (to_delivery, mut delivery_answers) = mpsc::unbounded_channel();
    let sales = waiters.saturating_sub(DELIVERY_DEVICES);
    for d in 0..sales {
        tokio::spawn(waiter(
            server.addr,
            5,
            format!("tablet-{d}"),
            "sales_app",
            connecting.clone(),
            connected.clone(),
            to_sales.clone(),
        ));
    }
    for d in 0..DELIVERY_DEVICES {
        tokio::spawn(waiter(
            server.addr,
            42,
            format!("driver-{d}"),
            "delivery_app",
            connecting.clone(),
            connected.clone(),
            to_delivery.clone(),
        ));
    }
    // Every connection made, and time for the last pulls to reach their wait.
    while connected.load(Ordering::SeqCst) < waiters {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (held, _) = server.rss_mib();
    println!("RSS with {waiters} waiting pulls: {held:.1} MiB");

    let mut targeted = Vec::new();
    for round in 0..rounds {
        let sent = Instant::now();
        ingest(&client, server.addr, "stock.picking", round as i64 + 1).await;
        targeted.extend(collect(&mut delivery_answers, DELIVERY_DEVICES, sent).await);
        // Time for the drivers to be waiting again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ingest → waiting delivery device, {waiters} waiting: {}",
        summary(targeted)
    );

    if sales > 0 && env_number("BENCH_BROADCAST", 1) == 1 {
        let sent = Instant::now();
        ingest(&client, server.addr, "sale.order", 1).await;
        let broadcast = collect(&mut sales_answers, sales, sent).await;
        println!(
            "ingest → all {sales} waiting sales devices (broadcast): {}",
            summary(broadcast)
        );
    }
    let (after, peak) = server.rss_mib();
    println!("RSS after: {after:.1} MiB, peak {peak:.1} MiB");
}
