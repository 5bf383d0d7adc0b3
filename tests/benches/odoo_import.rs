//! Reading Odoo: the import of `BENCH_RECORDS` (default 100,000) records, a sweep that finds
//! every one of them again (the worst case: all changed within the overlap), a sweep that
//! finds nothing, and the ids check, each against the stand-in Odoo of the test support
//! (`smartsync_tests::odoo_db`), in process, over HTTP JSON-RPC, into the real server's log
//! (SQLite, `synchronous = full`).
//!
//! The stand-in's own work (domain evaluation, JSON) is in the times; a real Odoo reading
//! from PostgreSQL is slower per page. What the numbers bound is this server's side, and the
//! number of calls each step makes to Odoo.
//!
//! `scripts/build-plugins && cargo bench -p smartsync-tests --bench odoo_import`;
//! `BENCH_RECORDS=10000` for a quick run; `BENCH_PAGE=500` sets `odoo.page_size`.

use std::time::{Duration, Instant};

use serde_json::json;
use smartsync::config::OdooModelConfig;
use smartsync::odoo::{Client, Credentials, Model, ModelState, Source, ids, import, sweep};
use smartsync_tests::TestServer;
use smartsync_tests::odoo::{FakeOdoo, ODOO_DB, ODOO_KEY, ODOO_LOGIN};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn calls_since(odoo: &FakeOdoo, before: usize) -> usize {
    odoo.db
        .calls()
        .iter()
        .skip(before)
        .filter(|c| c.starts_with("res.partner."))
        .count()
}

#[tokio::main]
async fn main() {
    let records = env_number("BENCH_RECORDS", 100_000);
    let page = env_number("BENCH_PAGE", 500) as u32;
    let odoo = FakeOdoo::start().await;
    for n in 0..records {
        odoo.db.insert(
            "res.partner",
            json!({"name": format!("Partner {n}"), "email": format!("partner{n}@example.com"),
                   "active": n % 10 != 0, "user_id": 2 + (n % 20) as i64,
                   "company_id": 1 + (n % 3) as i64}),
        );
    }
    let server = TestServer::start_with(|c| c.database.synchronous = "full".into()).await;
    let app = server.app();
    let settings = OdooModelConfig {
        fields: ["name", "email", "active", "user_id", "company_id"]
            .iter()
            .map(|f| f.to_string())
            .collect(),
        track_deletions: true,
    };
    let credentials = Credentials {
        url: odoo.url.clone(),
        database: ODOO_DB.into(),
        login: ODOO_LOGIN.into(),
        api_key: ODOO_KEY.into(),
    };
    let source = Source {
        client: Client::new(credentials, Duration::from_secs(60)).expect("client"),
        store: app.store.clone(),
        log: app.log.clone(),
        page_size: page,
        keeps_every_record: true,
    };
    let model = Model {
        name: "res.partner",
        settings: &settings,
    };
    let overlap = chrono::Duration::seconds(300);
    let mut state = ModelState::default();
    println!("records {records}, page_size {page}");

    let before = odoo.db.calls().len();
    let started = Instant::now();
    import::run(&source, &model, overlap, &mut state, |_| {})
        .await
        .expect("import");
    let took = started.elapsed();
    println!(
        "import: {:.2} s, {:.0} records/s, {} calls to Odoo, {} stored",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64(),
        calls_since(&odoo, before),
        state.import_stored
    );

    let before = odoo.db.calls().len();
    let started = Instant::now();
    let swept = sweep::run(&source, &model, overlap, &mut state)
        .await
        .expect("sweep");
    let took = started.elapsed();
    println!(
        "sweep, every record changed within the overlap: {:.2} s, {} read, {} recovered, {} calls",
        took.as_secs_f64(),
        swept.read,
        swept.recovered,
        calls_since(&odoo, before)
    );

    state.sweep_from = Some(smartsync::odoo::odoo_time(chrono::Utc::now()));
    let before = odoo.db.calls().len();
    let started = Instant::now();
    let swept = sweep::run(&source, &model, overlap, &mut state)
        .await
        .expect("sweep");
    println!(
        "sweep, nothing changed: {:.3} s, {} read, {} calls",
        started.elapsed().as_secs_f64(),
        swept.read,
        calls_since(&odoo, before)
    );

    // 1 % of the records go without a webhook.
    for id in (1..=records as i64).step_by(100) {
        odoo.db.delete_silently("res.partner", id);
    }
    let before = odoo.db.calls().len();
    let started = Instant::now();
    let checked = ids::run(&source, &model, Duration::ZERO, &mut state)
        .await
        .expect("ids check");
    let took = started.elapsed();
    println!(
        "ids check: {:.2} s, {} ids in Odoo, {} deletions found, {} calls",
        took.as_secs_f64(),
        checked.odoo_ids,
        checked.deleted,
        calls_since(&odoo, before)
    );
    let before = odoo.db.calls().len();
    let started = Instant::now();
    let checked = ids::run(&source, &model, Duration::ZERO, &mut state)
        .await
        .expect("ids check");
    println!(
        "ids check, nothing to do: {:.2} s, {} ids, {} calls",
        started.elapsed().as_secs_f64(),
        checked.odoo_ids,
        calls_since(&odoo, before)
    );
    server.stop().await;
}
