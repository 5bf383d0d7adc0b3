//! The two stores side by side, through the `EventStore` trait, in one run: single-event
//! appends from many tasks at once (what concurrent webhooks become after group commit), and
//! 1000-event batches (the batch API), on SQLite (`synchronous = full`) and on the PostgreSQL
//! server `scripts/postgres` finds (its defaults: `synchronous_commit = on`, fsync on).
//!
//! `cargo bench -p smartsync-tests --bench stores`; `BENCH_EVENTS` (default 50,000) and
//! `BENCH_TASKS` (default 64) tune it.

use std::sync::Arc;
use std::time::Instant;

use smartsync::event::{EventKind, NewEvent};
use smartsync::store::{self, Access, EventStore, Settings};
use smartsync_tests::postgres::TestDatabase;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        model: "sale.order".into(),
        record_id: n as i64,
        kind: EventKind::Create,
        timestamp: "2024-01-15T10:30:00Z".into(),
        payload: Some(format!(
            r#"{{"id":{n},"name":"S{n:05}","partner_id":7,"state":"draft","user_id":5,"amount_total":1250.5}}"#
        )),
        changed_fields: None,
        dedupe_key: None,
        received_at: "2024-01-15T10:30:00Z".into(),
    }
}

async fn open(url: &str) -> Arc<dyn EventStore> {
    let settings = Settings {
        url: url.into(),
        synchronous: "full".into(),
        max_connections: 8,
    };
    store::open(&settings, Access::Write).await.expect("open")
}

/// Events/s of `events` single-event appends from `tasks` tasks at once.
async fn singles(store: &Arc<dyn EventStore>, events: usize, tasks: usize) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for n in (t..events).step_by(tasks) {
                for result in store.append(vec![Arc::new(vec![event(n)])]).await {
                    result.expect("appended");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// Events/s of 1000-event batches, 4 calls in flight.
async fn batches(store: &Arc<dyn EventStore>, events: usize) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for chunk in (0..events)
                .collect::<Vec<_>>()
                .chunks(1000)
                .skip(t)
                .step_by(4)
            {
                let batch: Vec<NewEvent> = chunk.iter().map(|&n| event(n)).collect();
                for result in store.append(vec![Arc::new(batch)]).await {
                    result.expect("appended");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    events as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let events = env_number("BENCH_EVENTS", 50_000);
    let tasks = env_number("BENCH_TASKS", 64);
    println!("| store | single-event appends, {tasks} tasks | 1000-event batches |");
    println!("|---|---|---|");
    let dir = tempfile::tempdir().expect("tempdir");
    let database = TestDatabase::create().await;
    for (name, url) in [
        (
            "SQLite",
            format!("sqlite://{}/bench.db", dir.path().display()),
        ),
        ("PostgreSQL", database.url.clone()),
    ] {
        let store = open(&url).await;
        let single = singles(&store, events, tasks).await;
        let batch = batches(&store, events).await;
        println!("| {name} | {single:.0} events/s | {batch:.0} events/s |");
        store.close().await;
    }
}
