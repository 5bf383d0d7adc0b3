//! Compaction of a long history, and the first sync it leaves to a new device, in one run:
//!
//! - builds a log of `BENCH_EVENTS` (default 1,000,000) events over `BENCH_RECORDS` (default
//!   100,000) `sale.order` records, each created, then written; 5 % of them end with a
//!   deletion. Payloads are Odoo's full ones (~300 bytes), each order belonging to one of 20
//!   salespersons (`user_id`). The events are appended through the library's store in
//!   1000-event batches, several in flight (group commit), received over the last 30 days;
//! - the database's size before compaction, after it, and after `VACUUM`;
//! - one round of compaction (`retention::compact_once`, `compact_after = 0`, tombstones kept),
//!   then checks that the log holds exactly one event per record;
//! - the first sync of a device that never pulled, over HTTP through the bundled sales_app
//!   plugin (`only_own_orders` true, then false), at `sync.default_limit` and at
//!   `sync.max_limit`, each on a freshly started server (no answers kept from a previous run).
//!
//! `scripts/build-plugins && cargo bench -p smartsync-host --bench compaction`;
//! `BENCH_EVENTS=20000 BENCH_RECORDS=2000` for a quick run; `BENCH_SYNCHRONOUS=normal` sets
//! `database.synchronous` (default `full`). Results go to stdout, one labelled line each.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use smartsync::Config;
use smartsync::config::{RetentionConfig, RetentionMode, Span, StaticSession};
use smartsync::event::{EventKind, NewEvent};
use smartsync::log::{EventLog, TailLimits};
use smartsync::store::{Access, EventStore, Settings};
use tokio::net::TcpListener;

mod common;
use common::{INGEST_TOKEN, TOKEN_SECRET, env_number};

/// The salespersons orders belong to: users 2 to 21.
const SALESPERSONS: i64 = 20;
/// The user whose devices pull: one of the salespersons.
const USER: i64 = 5;
const SESSION: &str = "bench-session";
/// Events per append call.
const BATCH: usize = 1000;
/// Append calls queued with the store at once.
const IN_FLIGHT: usize = 8;
/// How much of the records end with a deletion, in percent.
const UNLINKED_PERCENT: usize = 5;

const MIB: f64 = 1024.0 * 1024.0;

fn salesperson(record: i64) -> i64 {
    2 + record % SALESPERSONS
}

fn odoo_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The `n`th change (0: its creation) of order `record`, at `at`: Odoo's full payload.
fn order_event(record: i64, n: usize, kind: EventKind, at: DateTime<Utc>) -> NewEvent {
    let state = match kind {
        EventKind::Unlink => "cancel",
        _ => ["draft", "sent", "sale", "sale", "done"][n.min(4)],
    };
    let untaxed = ((record * 7919 + n as i64 * 104_729) % 1_000_000) as f64 / 100.0;
    let written = odoo_time(at);
    let payload = format!(
        r#"{{"id":{record},"name":"S{record:06}","state":"{state}","amount_total":{total:.2},"amount_untaxed":{untaxed:.2},"partner_id":{partner},"user_id":{user},"company_id":1,"currency_id":1,"date_order":"{written}","client_order_ref":"PO-{record}-{n}","invoice_status":"to invoice","note":false,"write_date":"{written}"}}"#,
        total = untaxed * 1.15,
        partner = 1000 + record % 5000,
        user = salesperson(record),
    );
    let when = smartsync::event::rfc3339(at);
    NewEvent {
        model: "sale.order".into(),
        record_id: record,
        kind,
        timestamp: when.clone(),
        payload: Some(payload),
        changed_fields: (kind == EventKind::Write).then(|| {
            ["state", "amount_total", "amount_untaxed", "write_date"]
                .map(String::from)
                .to_vec()
        }),
        dedupe_key: None,
        received_at: when,
    }
}

/// What the built log holds.
struct Built {
    unlinked: usize,
    payload_bytes: usize,
}

/// Appends `events` events over `records` records, 1000 per call, `IN_FLIGHT` calls queued
/// with the store at once: the store commits calls in the order they are made, so a record's
/// creation always comes before its changes.
async fn build(store: &Arc<dyn EventStore>, events: usize, records: usize) -> Built {
    assert!(
        records > 0 && events >= records,
        "BENCH_EVENTS must be at least BENCH_RECORDS"
    );
    let mut rng = StdRng::seed_from_u64(42);
    // How many events each record gets, and which records end deleted (those with 2 or more).
    let counts: Vec<usize> = (0..records)
        .map(|r| events / records + usize::from(r < events % records))
        .collect();
    let mut order: Vec<usize> = (0..records).collect();
    order.shuffle(&mut rng);
    let mut unlinked = vec![false; records];
    let mut deletions = 0;
    for &r in order.iter().filter(|&&r| counts[r] >= 2) {
        if deletions * 100 >= records * UNLINKED_PERCENT {
            break;
        }
        unlinked[r] = true;
        deletions += 1;
    }
    // Each record's slots in log order, shuffled together: its nth slot is its nth change.
    let mut slots: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(r, &n)| std::iter::repeat_n(r as u32, n))
        .collect();
    slots.shuffle(&mut rng);
    let mut seen = vec![0usize; records];

    // Received over the last 30 days, up to an hour ago, in log order.
    let start = Utc::now() - chrono::Duration::days(30);
    let span_ms = (chrono::Duration::days(30) - chrono::Duration::hours(1)).num_milliseconds();
    let mut payload_bytes = 0;
    let mut pending = VecDeque::new();
    for (c, chunk) in slots.chunks(BATCH).enumerate() {
        let mut batch = Vec::with_capacity(chunk.len());
        for (k, &r) in chunk.iter().enumerate() {
            let r = r as usize;
            let i = (c * BATCH + k) as i64;
            let n = seen[r];
            seen[r] += 1;
            let kind = if n == 0 {
                EventKind::Create
            } else if unlinked[r] && n + 1 == counts[r] {
                EventKind::Unlink
            } else {
                EventKind::Write
            };
            let at = start + chrono::Duration::milliseconds(span_ms * i / events as i64);
            let event = order_event(r as i64 + 1, n, kind, at);
            payload_bytes += event.payload.as_ref().map_or(0, String::len);
            batch.push(event);
        }
        pending.push_back(store.append(vec![Arc::new(batch)]));
        if pending.len() >= IN_FLIGHT
            && let Some(answer) = pending.pop_front()
        {
            check_appended(answer.await);
        }
    }
    while let Some(answer) = pending.pop_front() {
        check_appended(answer.await);
    }
    Built {
        unlinked: deletions,
        payload_bytes,
    }
}

fn check_appended(answer: Vec<smartsync::store::BatchResult>) {
    for batch in answer {
        let appended = batch.expect("append");
        assert!(
            appended.iter().all(|a| !a.duplicate),
            "nothing is a duplicate"
        );
    }
}

/// The database's size, as SQLite and the file system see it.
struct Size {
    page_size: u64,
    pages: u64,
    free_pages: u64,
    db_file: u64,
    wal_file: u64,
}

impl Size {
    fn of(db: &Path) -> Size {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the database");
        let pragma = |name: &str| -> u64 {
            let value: i64 = conn
                .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                .expect("pragma");
            value as u64
        };
        let file = |path: PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Size {
            page_size: pragma("page_size"),
            pages: pragma("page_count"),
            free_pages: pragma("freelist_count"),
            db_file: file(db.to_path_buf()),
            wal_file: file(PathBuf::from(wal)),
        }
    }

    fn in_use(&self) -> u64 {
        (self.pages - self.free_pages) * self.page_size
    }

    fn line(&self) -> String {
        format!(
            "{:.1} MiB in use (page_count × page_size {:.1} MiB, {} free pages = {:.1} MiB); \
             files: .db {:.1} MiB + -wal {:.1} MiB = {:.1} MiB",
            self.in_use() as f64 / MIB,
            (self.pages * self.page_size) as f64 / MIB,
            self.free_pages,
            (self.free_pages * self.page_size) as f64 / MIB,
            self.db_file as f64 / MIB,
            self.wal_file as f64 / MIB,
            (self.db_file + self.wal_file) as f64 / MIB,
        )
    }
}

fn synchronous() -> String {
    std::env::var("BENCH_SYNCHRONOUS").unwrap_or_else(|_| "full".into())
}

fn retention() -> RetentionConfig {
    RetentionConfig {
        mode: RetentionMode::Compact,
        compact_after: Span::from_secs(0),
        tombstone_ttl: Span::from_secs(0),
        ..Default::default()
    }
}

/// A server on the database at `db`, with the bundled sales_app plugin configured with
/// `only_own_orders`.
async fn start_server(dir: &Path, db: &Path, only_own_orders: bool) -> smartsync::Server {
    let mut config = Config::embedded();
    config.plugins.file = dir.join(format!("plugins-{only_own_orders}.toml"));
    config.plugins.watch = false;
    std::fs::write(
        &config.plugins.file,
        format!(
            "{}[plugins.sales_app.config]\nonly_own_orders = {only_own_orders}\n",
            common::plugin_entry("sales_app", "sales_app")
        ),
    )
    .expect("plugins.toml");
    config.database.url = format!("sqlite://{}", db.display());
    config.database.synchronous = synchronous();
    config.secrets.ingest_token = Some(INGEST_TOKEN.into());
    config.secrets.token_secret = Some(TOKEN_SECRET.into());
    config.auth.sessions = [(SESSION.to_string(), StaticSession::Uid(USER))]
        .into_iter()
        .collect();
    // What the bench compacted with: nothing more to do, and no tombstone dropped meanwhile.
    config.retention = retention();
    config.log.level = "warn".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    smartsync::start_on(config, listener)
        .await
        .expect("server starts")
}

/// What one first sync received.
struct FirstSync {
    pulls: u64,
    events: usize,
    unlinks: usize,
    records: std::collections::HashSet<i64>,
    bytes: usize,
    secs: f64,
}

/// Pulls as a device that never pulled, until `has_more` is false.
async fn first_sync(addr: std::net::SocketAddr, device: &str, limit: Option<i64>) -> FirstSync {
    let client = reqwest::Client::new();
    let mut body = json!({"user_id": USER, "device_id": device, "app_type": "sales_app"});
    if let Some(limit) = limit {
        body["limit"] = limit.into();
    }
    let mut run = FirstSync {
        pulls: 0,
        events: 0,
        unlinks: 0,
        records: std::collections::HashSet::new(),
        bytes: 0,
        secs: 0.0,
    };
    let started = Instant::now();
    loop {
        let response = client
            .post(format!("http://{addr}/api/v2/sync/pull"))
            .header("X-Session-Id", SESSION)
            .json(&body)
            .send()
            .await
            .expect("pull");
        let status = response.status();
        let bytes = response.bytes().await.expect("pull answer");
        assert!(
            status.is_success(),
            "pull: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let answer: Value = serde_json::from_slice(&bytes).expect("pull answer is JSON");
        assert!(
            answer.get("reset_required").is_none_or(|r| r == false),
            "a first sync is not reset: {}",
            answer.get("reset_reason").unwrap_or(&Value::Null)
        );
        run.pulls += 1;
        run.bytes += bytes.len();
        for event in answer["events"].as_array().expect("events") {
            run.events += 1;
            run.unlinks += usize::from(event["event"] == "unlink");
            run.records
                .insert(event["record_id"].as_i64().expect("record_id"));
        }
        if answer["has_more"] != true {
            break;
        }
    }
    run.secs = started.elapsed().as_secs_f64();
    run
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let events = env_number("BENCH_EVENTS", 1_000_000) as usize;
    let records = env_number("BENCH_RECORDS", 100_000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("smartsync.db");
    let defaults = Config::default();
    let settings = Settings {
        url: format!("sqlite://{}", db.display()),
        synchronous: synchronous(),
        max_connections: defaults.database.max_connections,
    };

    // 1. The log.
    let store = smartsync::store::open(&settings, Access::Write)
        .await
        .expect("open the store");
    let started = Instant::now();
    let built = build(&store, events, records).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "log: {events} events over {records} sale.order records ({} end with an unlink), \
         payloads {:.0} bytes on average, {SALESPERSONS} salespersons",
        built.unlinked,
        built.payload_bytes as f64 / events as f64
    );
    println!(
        "build: {events} events appended in {secs:.2} s ({:.0} events/s; {BATCH}-event batches, \
         {IN_FLIGHT} in flight, synchronous = {})",
        events as f64 / secs,
        settings.synchronous
    );

    // 2. Its size.
    println!("before compaction: {}", Size::of(&db).line());

    // 3. Compaction.
    let log = EventLog::open(
        store.clone(),
        TailLimits {
            max_events: defaults.database.tail_events,
            max_bytes: defaults.database.tail_max_bytes,
        },
        defaults.ingest.group_commit_max_events,
    )
    .await
    .expect("open the log");
    let head = log.head();
    let config = retention();
    let started = Instant::now();
    let done = smartsync::retention::compact_once(&log, &config)
        .await
        .expect("compaction");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "compaction: {} events folded and dropped, {} rewritten, {} tombstones dropped, \
         compacted through {} of {head}; {secs:.2} s, {:.0} events/s ({} ids per step)",
        done.folded,
        done.rewritten,
        done.tombstones_dropped,
        done.compacted_through,
        head as f64 / secs,
        config.batch_events
    );
    println!("after compaction: {}", Size::of(&db).line());
    log.close().await;
    store.close().await;

    {
        let conn = rusqlite::Connection::open(&db).expect("open the database");
        let (rows, distinct, unlinks, most): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT model || ':' || record_id), \
                 COALESCE(SUM(kind = 'unlink'), 0), \
                 (SELECT COALESCE(MAX(n), 0) FROM \
                  (SELECT COUNT(*) AS n FROM events GROUP BY model, record_id)) \
                 FROM events",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .expect("count events");
        println!(
            "after compaction: {rows} events for {distinct} records (one per record: {}; \
             most for one record: {most}), {unlinks} of them deletions",
            if rows == distinct && distinct == records as i64 {
                "yes"
            } else {
                "NO"
            }
        );
        assert_eq!(rows, records as i64, "one event per record");
        assert_eq!(distinct, records as i64, "every record kept");
        assert_eq!(unlinks, built.unlinked as i64, "every deletion kept");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        let started = Instant::now();
        conn.execute_batch("VACUUM").expect("vacuum");
        let secs = started.elapsed().as_secs_f64();
        drop(conn);
        println!("after VACUUM ({secs:.2} s): {}", Size::of(&db).line());
    }

    // 4. First sync of a device that never pulled, over HTTP.
    let max_limit = defaults.sync.max_limit;
    let default_limit = defaults.sync.default_limit;
    for only_own_orders in [true, false] {
        let expected = if only_own_orders {
            (1..=records as i64)
                .filter(|&r| salesperson(r) == USER)
                .count()
        } else {
            records
        };
        for (limit, label) in [
            (None, format!("default limit ({default_limit})")),
            (
                Some(max_limit),
                format!("limit {max_limit} (sync.max_limit)"),
            ),
        ] {
            // A fresh server for each: no plugin answers kept from the run before.
            let server = start_server(dir.path(), &db, only_own_orders).await;
            let device = format!("first-sync-{only_own_orders}-{}", limit.unwrap_or(0));
            let run = first_sync(server.addr(), &device, limit).await;
            server.shutdown().await.expect("shutdown");
            println!(
                "first sync, sales_app only_own_orders = {only_own_orders}, {label}: \
                 {} pulls, {} events ({} records, {} deletions; expected {expected}), \
                 {:.2} s, {:.0} records/s, {:.1} ms/pull, {:.1} MiB received",
                run.pulls,
                run.events,
                run.records.len(),
                run.unlinks,
                run.secs,
                run.events as f64 / run.secs,
                1000.0 * run.secs / run.pulls as f64,
                run.bytes as f64 / MIB,
            );
            assert_eq!(run.events, expected, "the first sync reads every record");
            assert_eq!(run.records.len(), expected, "each record once");
        }
    }
}
