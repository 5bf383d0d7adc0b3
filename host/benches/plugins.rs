//! What a plugin call costs: each bundled plugin shaping 100 events through the sandbox, beside
//! the same plugin code compiled natively and called directly, in one run; and what loading a
//! plugin costs with and without the compile cache.
//!
//! Needs the plugins built: `scripts/build-plugins`, then
//! `cargo bench -p smartsync-host --bench plugins` (`BENCH_CALLS`, default 3000, per plugin).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smartsync::event::{Event, EventKind, LoggedEvent};
use smartsync::plugin::{CallContext, PluginEngine, PluginLimits};
use smartsync_sdk::Plugin;

mod common;
use common::{env_number, plugin_wasm as wasm};

/// 100 events of the plugin's models with Odoo-like payloads of ~300 bytes.
fn events(models: &[&str]) -> Vec<Arc<LoggedEvent>> {
    (1..=100)
        .map(|i: i64| {
            let model = models[(i as usize) % models.len()];
            let state = ["draft", "assigned", "done", "cancel"][(i % 4) as usize];
            let payload = json!({
                "id": i, "name": format!("REC/{i:05}"), "user_id": if i % 2 == 0 { 5 } else { 9 },
                "company_id": 1 + i % 2, "state": state,
                "picking_type_code": if i % 3 == 0 { "incoming" } else { "outgoing" },
                "partner_id": 7, "amount_total": 1250.5, "write_date": "2024-01-15 10:30:00",
                "create_date": "2024-01-15 10:30:00", "note": false,
            });
            LoggedEvent::new(Event {
                id: i,
                model: model.to_string(),
                record_id: 1000 + i,
                kind: [
                    EventKind::Create,
                    EventKind::Write,
                    EventKind::Write,
                    EventKind::Unlink,
                ][(i % 4) as usize],
                timestamp: "2024-01-15T10:30:00Z".into(),
                payload: Some(payload.to_string()),
                changed_fields: None,
                received_at: "2024-01-15T10:30:01Z".into(),
                rev: 0,
                prior: smartsync::event::Prior::Unknown,
                folded: None,
            })
        })
        .collect()
}

fn sdk_events(events: &[Arc<LoggedEvent>]) -> Vec<smartsync_sdk::Event> {
    events
        .iter()
        .map(|e| smartsync_sdk::Event {
            id: e.event.id,
            model: e.event.model.clone(),
            record_id: e.event.record_id,
            kind: match e.event.kind {
                EventKind::Create => smartsync_sdk::EventKind::Create,
                EventKind::Write => smartsync_sdk::EventKind::Write,
                EventKind::Unlink => smartsync_sdk::EventKind::Unlink,
            },
            timestamp: e.event.timestamp.clone(),
            payload: e.event.payload.clone(),
            changed_fields: e.event.changed_fields.clone(),
            prior: match &e.event.prior {
                smartsync::event::Prior::None => smartsync_sdk::Prior::None,
                smartsync::event::Prior::Unknown => smartsync_sdk::Prior::Unknown,
                smartsync::event::Prior::Changed(v) => smartsync_sdk::Prior::Changed(v.clone()),
            },
        })
        .collect()
}

fn sdk_context(config: &Value) -> smartsync_sdk::Context {
    smartsync_sdk::Context {
        user_id: 5,
        device_id: "bench".into(),
        app_type: "bench".into(),
        company_ids: vec![1],
        lang: None,
        tz: None,
        config: config.to_string(),
    }
}

/// Mean time per call over `calls` calls, after a warm-up.
fn per_call(calls: u32, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut kept = 0;
    for _ in 0..calls / 10 {
        kept = f();
    }
    let started = Instant::now();
    for _ in 0..calls {
        kept = f();
    }
    (started.elapsed() / calls, kept)
}

type NativeShape = fn(
    smartsync_sdk::Context,
    Vec<smartsync_sdk::Event>,
) -> Result<Vec<smartsync_sdk::ShapedEvent>, smartsync_sdk::PluginError>;

fn main() {
    let calls = u32::try_from(env_number("BENCH_CALLS", 3000)).unwrap_or(u32::MAX);
    let engine = PluginEngine::new(None).expect("engine");
    let ctx = CallContext {
        user_id: 5,
        device_id: "bench".into(),
        app_type: "bench".into(),
        company_ids: vec![1],
        lang: None,
        tz: None,
    };
    let plugins: [(&str, &[&str], Value, NativeShape); 4] = [
        (
            "sales_app",
            &["sale.order", "res.partner", "product.template"],
            json!({}),
            smartsync_sdk::FeedPlugin::<sales_app::SalesApp>::shape,
        ),
        (
            "sales_app",
            &["sale.order", "res.partner", "product.template"],
            json!({"only_own_orders": true, "fields": ["name", "state"]}),
            smartsync_sdk::FeedPlugin::<sales_app::SalesApp>::shape,
        ),
        (
            "delivery_app",
            &["stock.picking"],
            json!({"only_outgoing": true}),
            smartsync_sdk::FeedPlugin::<delivery_app::DeliveryApp>::shape,
        ),
        (
            "manager_app",
            &[
                "sale.order",
                "res.partner",
                "stock.picking",
                "account.move",
                "hr.expense",
            ],
            json!({}),
            smartsync_sdk::FeedPlugin::<manager_app::ManagerApp>::shape,
        ),
    ];
    println!(
        "| plugin (config), 100 events | sandboxed call | native call | ratio | events kept |"
    );
    println!("|---|---|---|---|---|");
    for (name, models, config, native) in plugins {
        let bytes = std::fs::read(wasm(name)).expect("read wasm");
        let plugin = engine
            .load(name, &bytes, config.to_string(), PluginLimits::default())
            .expect("load plugin");
        let input = events(models);
        let (sandboxed, kept) = per_call(calls, || {
            plugin.shape_blocking(&ctx, &input).expect("shape").len()
        });
        let sdk_input = sdk_events(&input);
        let sdk_ctx = sdk_context(&config);
        let (direct, native_kept) = per_call(calls, || {
            native(sdk_ctx.clone(), sdk_input.clone())
                .expect("native shape")
                .len()
        });
        assert_eq!(kept, native_kept, "the sandbox and native code agree");
        println!(
            "| {name} ({config}) | {:.1} µs | {:.1} µs | {:.2}× | {kept} |",
            sandboxed.as_secs_f64() * 1e6,
            direct.as_secs_f64() * 1e6,
            sandboxed.as_secs_f64() / direct.as_secs_f64(),
        );
    }

    // Loading: compiling from scratch, then from a warm disk cache (what a restart does).
    let cache = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(wasm("manager_app")).expect("read wasm");
    // A new engine on `dir`, then one load timed.
    let timed_load = |dir: &std::path::Path| {
        let engine = PluginEngine::new(Some(dir)).expect("engine");
        let started = Instant::now();
        engine
            .load("manager_app", &bytes, "{}".into(), PluginLimits::default())
            .expect("load");
        started.elapsed()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..5 {
        let dir = cache.path().join(format!("c{round}"));
        cold.push(timed_load(&dir));
        warm.push(timed_load(&dir));
    }
    cold.sort();
    warm.sort();
    println!();
    println!(
        "load manager_app ({} KB): compile {:.1} ms, from the disk cache {:.1} ms (medians of 5)",
        bytes.len() / 1024,
        cold[2].as_secs_f64() * 1e3,
        warm[2].as_secs_f64() * 1e3
    );
}
