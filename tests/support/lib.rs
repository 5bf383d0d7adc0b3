//! What the end-to-end tests run against: the real server on 127.0.0.1:0 with a temporary SQLite
//! file, plus stand-ins for what cannot run here (Odoo's session endpoint) and what the seed's
//! clients talk to (an external CRM).

pub mod crm;
pub mod odoo;
pub mod odoo_db;
pub mod postgres;

use std::path::PathBuf;

use reqwest::Response;
use serde_json::{Value, json};
use smartsync::config::{RetentionConfig, StaticSession, StaticSessionFull};
use smartsync::retention::{Compaction, Pruned};
use smartsync::{Config, Server};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub const INGEST_TOKEN: &str = "test-ingest-token-0123456789";
pub const TOKEN_SECRET: &str = "test-token-secret-0123456789";

/// Sessions the static-mode test server knows: `session-<uid>` for users 2, 5 and 42, and
/// `session-7` for a user of companies 1 and 3.
pub fn session(uid: i64) -> String {
    format!("session-{uid}")
}

/// The server under test. Stop it with [`TestServer::stop`] to shut it down gracefully.
pub struct TestServer {
    server: Option<Server>,
    /// Where the server listened before [`TestServer::halt`].
    halted_at: Option<std::net::SocketAddr>,
    pub config: Config,
    pub dir: TempDir,
    pub client: reqwest::Client,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The target directory this test binary was built in (`target/<profile>`'s parent).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash>
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf()
}

/// A plugin built for wasm32-wasip2 from this workspace (`scripts/test` builds them first).
pub fn plugin_wasm(lib_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{lib_name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with `cargo build --release --target wasm32-wasip2 --workspace --exclude smartsync-host --exclude smartsync-tests` (scripts/test does)",
        path.display()
    );
    path
}

/// plugins.toml enabling the three bundled plugins, as the repository's own file does.
pub fn bundled_plugins_toml() -> String {
    ["sales_app", "delivery_app", "manager_app"]
        .iter()
        .map(|app| {
            format!(
                "[plugins.{app}]\napp_type = \"{app}\"\nwasm = {:?}\n\n",
                plugin_wasm(app).display().to_string()
            )
        })
        .collect()
}

/// A config for tests: static sessions, fixed secrets, a SQLite file in `dir`, and the bundled
/// plugins (compiled plugins are cached in the target directory, shared by all tests).
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::embedded();
    config.server.listen = "127.0.0.1:0".into();
    config.database.url = format!("sqlite://{}/smartsync.db", dir.path().display());
    config.database.synchronous = "normal".into();
    config.secrets.ingest_token = Some(INGEST_TOKEN.into());
    config.secrets.token_secret = Some(TOKEN_SECRET.into());
    config.secrets.admin_token = Some(ADMIN_TOKEN.into());
    let plugins = dir.path().join("plugins.toml");
    std::fs::write(&plugins, bundled_plugins_toml()).expect("write plugins.toml");
    config.plugins.file = plugins;
    config.plugins.cache_dir = Some(target_dir().join("test-plugin-cache"));
    config.plugins.watch_interval_ms = 100;
    config.sync.position_flush_ms = 50;
    config.auth.sessions = [2, 5, 42]
        .into_iter()
        .map(|uid| (session(uid), StaticSession::Uid(uid)))
        .collect();
    config.auth.sessions.insert(
        session(7),
        StaticSession::Full(StaticSessionFull {
            uid: 7,
            company_ids: vec![1, 3],
            lang: Some("ar_001".into()),
            tz: Some("Africa/Casablanca".into()),
        }),
    );
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = test_config(&dir);
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let server = boot(config.clone()).await;
        TestServer {
            server: Some(server),
            halted_at: None,
            config,
            dir,
            client: reqwest::Client::new(),
        }
    }

    /// The running server's parts (its log, store, config).
    pub fn app(&self) -> &std::sync::Arc<smartsync::app::App> {
        self.running().app()
    }

    fn running(&self) -> &Server {
        self.server.as_ref().expect("server is running")
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.running().addr())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The plugins.toml this server reads.
    pub fn plugins_file(&self) -> PathBuf {
        self.config.plugins.file.clone()
    }

    /// `GET /api/v2/admin/plugins`.
    pub async fn admin_plugins(&self) -> Value {
        let response = self
            .client
            .get(self.url("/api/v2/admin/plugins"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("admin answer is JSON")
    }

    /// Prunes the log now as `retention` says, through the server's own pruner.
    pub async fn prune(&self, retention: &RetentionConfig) -> Pruned {
        smartsync::retention::prune_once(&self.running().app().log, retention)
            .await
            .expect("prune")
    }

    /// Replaces plugins.toml and asks the server to reload it.
    pub async fn set_plugins(&self, toml: &str) -> Response {
        std::fs::write(self.plugins_file(), toml).expect("write plugins.toml");
        self.client
            .post(self.url("/api/v2/admin/plugins/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("reload request")
    }

    /// Compacts the log now as `retention` says, through the server's own compactor.
    pub async fn compact(&self, retention: &RetentionConfig) -> Compaction {
        smartsync::retention::compact_once(&self.running().app().log, retention)
            .await
            .expect("compact")
    }

    /// Graceful shutdown, then a fresh start on the same database (on a new port).
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
        self.server = Some(boot(self.config.clone()).await);
    }

    /// Stops the server, runs `meanwhile`, and starts it again on the same database (on
    /// another port).
    pub async fn stop_for_a_while(&mut self, meanwhile: impl FnOnce()) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
        meanwhile();
        self.server = Some(boot(self.config.clone()).await);
    }

    /// Stops the server; [`TestServer::resume`] starts it again on the same address, so that
    /// what posts to it (Odoo's webhook rules) reaches it again.
    pub async fn halt(&mut self) {
        if let Some(server) = self.server.take() {
            self.halted_at = Some(server.addr());
            server.shutdown().await.expect("graceful shutdown");
        }
    }

    pub async fn resume(&mut self) {
        let addr = self.halted_at.take().expect("halted first");
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the same address again");
        self.server = Some(
            smartsync::start_on(self.config.clone(), listener)
                .await
                .expect("server starts"),
        );
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
    }

    /// `POST /api/v2/events` with the right bearer token.
    pub async fn ingest(&self, events: Value) -> Response {
        self.client
            .post(self.url("/api/v2/events"))
            .bearer_auth(INGEST_TOKEN)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("ingest request")
    }

    /// Ingests and returns the ids, failing the test on any error.
    pub async fn ingest_ok(&self, events: Value) -> Vec<i64> {
        let response = self.ingest(events).await;
        let status = response.status();
        let body: Value = response.json().await.expect("ingest answer is JSON");
        assert_eq!(status, 200, "ingest failed: {body}");
        body["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_i64().expect("id"))
            .collect()
    }

    /// `POST /api/v2/webhooks/odoo?token=...&<extra query>` with Odoo's JSON body.
    pub async fn webhook(&self, extra_query: &str, body: &Value) -> Response {
        let mut url = format!("{}?token={INGEST_TOKEN}", self.url("/api/v2/webhooks/odoo"));
        if !extra_query.is_empty() {
            url.push('&');
            url.push_str(extra_query);
        }
        // Odoo posts json.dumps(vals, sort_keys=True, default=str) with this one header.
        self.client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("webhook request")
    }

    /// `POST /api/v2/sync/pull` as the seed's clients send it.
    pub async fn pull(&self, session_id: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/api/v2/sync/pull"))
            .header("Content-Type", "application/json")
            .header("X-Session-Id", session_id)
            .body(body.to_string())
            .send()
            .await
            .expect("pull request")
    }

    /// Pulls and returns the 200 body, failing the test otherwise.
    pub async fn pull_ok(&self, session_id: &str, body: &Value) -> Value {
        let response = self.pull(session_id, body).await;
        let status = response.status();
        let body: Value = response.json().await.expect("pull answer is JSON");
        assert_eq!(status, 200, "pull failed: {body}");
        body
    }

    pub async fn state(&self, session_id: &str, query: &str) -> Response {
        self.client
            .get(format!("{}?{query}", self.url("/api/v2/sync/state")))
            .header("X-Session-Id", session_id)
            .send()
            .await
            .expect("state request")
    }
}

async fn boot(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    smartsync::start_on(config, listener)
        .await
        .expect("server starts")
}

/// Ids of the events in a pull answer.
pub fn event_ids(answer: &Value) -> Vec<i64> {
    answer["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["id"].as_i64().expect("event id"))
        .collect()
}

/// An ingest item.
/// A device's copy of its feed, kept as the seed's clients keep theirs: a `create` or `write`
/// stores the record's payload, an `unlink` deletes the record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replica {
    pub records: std::collections::BTreeMap<(String, i64), Value>,
}

impl Replica {
    /// Applies a pull answer's events, in order; a reset first drops the whole copy.
    pub fn apply(&mut self, answer: &Value) {
        if answer["reset_required"] == true {
            self.records.clear();
        }
        for event in answer["events"].as_array().expect("events array") {
            let key = (
                event["model"].as_str().expect("model").to_string(),
                event["record_id"].as_i64().expect("record_id"),
            );
            match event["event"].as_str().expect("event") {
                "unlink" => {
                    self.records.remove(&key);
                }
                _ => {
                    self.records
                        .insert(key, event.get("payload").cloned().unwrap_or(Value::Null));
                }
            }
        }
    }

    /// Pulls until nothing more waits, applying every page; returns the pages' answers.
    pub async fn catch_up(
        &mut self,
        server: &TestServer,
        session_id: &str,
        request: &Value,
    ) -> Vec<Value> {
        let mut answers = Vec::new();
        for _ in 0..10_000 {
            let answer = server.pull_ok(session_id, request).await;
            self.apply(&answer);
            let more = answer["has_more"] == true;
            answers.push(answer);
            if !more {
                return answers;
            }
        }
        panic!("a feed that never ends");
    }
}

/// A small deterministic random source (xorshift64*), so that a failing seed replays.
pub struct Dice(pub u64);

impl Dice {
    pub fn roll(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

pub fn item(model: &str, record_id: i64, kind: &str) -> Value {
    json!({"model": model, "record_id": record_id, "event": kind})
}

/// Asks a server the test started as a process to stop, as an init system would (SIGTERM).
pub fn sigterm(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {}", child.id());
}

/// Stops a server the test started as a process with SIGTERM, and waits for it to exit.
pub fn stop(child: &mut std::process::Child) -> std::process::ExitStatus {
    sigterm(child);
    child.wait().expect("wait")
}

/// A port on 127.0.0.1 that nothing listens on now, for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `smartsync` binary built beside this test (`cargo build` puts it in the target dir).
pub fn smartsync_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/smartsync
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let bin = dir.join(format!("smartsync{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p smartsync-host` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Waits until a server on `port` answers `/healthz` (at most a minute).
pub async fn wait_until_serving(port: u16) {
    let health = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while client.get(&health).send().await.is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Binds an axum router on 127.0.0.1:0 and serves it in the background.
pub async fn spawn_router(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}
