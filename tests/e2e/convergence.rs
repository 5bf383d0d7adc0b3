//! Convergence: whatever happens to the records and whenever devices pull, every device ends
//! with exactly the records its user may see, with the same values, as the seed's clients keep
//! them (create and write store the record, unlink deletes it).
//!
//! A random history of orders and pickings (created, changed, reassigned between salespersons,
//! drivers and companies, deleted) is sent as Odoo sends it, while a salesperson's phone
//! (`only_own_orders`), a manager's tablet (`filter_companies`) and a driver's phone
//! (`only_assigned_to_me`) pull at random moments and compaction folds the log, each user with
//! a device that asks for coalesced answers (one event per record) and one that does not; then
//! every device, and a new one of each kind, catches up and is compared with what Odoo holds.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use smartsync::config::{RetentionConfig, RetentionMode, Span};
use smartsync_tests::{Dice, Replica, TestServer, bundled_plugins_toml, session};

const SALESPERSON: i64 = 5;
const MANAGER: i64 = 7; // companies 1 and 3 (the test sessions' user 7)
const DRIVER: i64 = 42;

/// Who sees what, as the plugins are configured here.
fn sees(user: i64, model: &str, record: &Value) -> bool {
    match user {
        SALESPERSON => model == "sale.order" && record["user_id"] == SALESPERSON,
        MANAGER => matches!(record["company_id"].as_i64(), Some(1 | 3)),
        DRIVER => model == "stock.picking" && record["user_id"] == DRIVER,
        _ => false,
    }
}

fn app_type(user: i64) -> &'static str {
    match user {
        SALESPERSON => "sales_app",
        MANAGER => "manager_app",
        _ => "delivery_app",
    }
}

fn pull(user: i64, device: &str, limit: u64) -> Value {
    // Devices that ask for one event per record in each answer converge too.
    let coalesce = device.ends_with("-c");
    json!({"user_id": user, "device_id": device, "app_type": app_type(user), "limit": limit,
           "coalesce": coalesce})
}

async fn run(seed: u64) {
    let server = TestServer::start_with(|config| config.retention.interval_secs = 3600).await;
    let toml = bundled_plugins_toml().replace(
        "[plugins.delivery_app]",
        "[plugins.sales_app.config]\nonly_own_orders = true\n\n[plugins.delivery_app]",
    ) + "[plugins.delivery_app.config]\nonly_assigned_to_me = true\n\n\
         [plugins.manager_app.config]\nfilter_companies = true\n";
    let reload = server.set_plugins(&toml).await;
    assert_eq!(reload.status(), 200);

    let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    // What Odoo holds: (model, id) -> the record's fields.
    let mut odoo: BTreeMap<(String, i64), Value> = BTreeMap::new();
    let users = [SALESPERSON, MANAGER, DRIVER];
    let mut devices: Vec<(i64, &str, Replica)> = users
        .iter()
        .flat_map(|&u| {
            [
                (u, "phone", Replica::default()),
                (u, "phone-c", Replica::default()),
            ]
        })
        .collect();
    let compact = RetentionConfig {
        mode: RetentionMode::Compact,
        compact_after: Span::from_secs(0),
        tombstone_ttl: Span::from_secs(0),
        batch_events: 7,
        ..RetentionConfig::default()
    };
    let mut version = 0;
    for _ in 0..240 {
        let model = dice.pick(&["sale.order", "stock.picking"]);
        let id = dice.below(12) as i64 + 1;
        let key = (model.to_string(), id);
        version += 1;
        let owner = match model {
            "sale.order" => dice.pick(&[SALESPERSON, SALESPERSON, 6]),
            _ => dice.pick(&[DRIVER, DRIVER, 43]),
        };
        let fields = json!({
            "id": id, "name": format!("{model}/{id}"), "user_id": owner,
            "company_id": dice.pick(&[1, 2, 3]), "state": dice.pick(&["draft", "sale", "done"]),
            "picking_type_code": "outgoing", "version": version,
        });
        let event = match (odoo.contains_key(&key), dice.below(5)) {
            (false, _) => {
                odoo.insert(key, fields.clone());
                json!({"model": model, "record_id": id, "event": "create", "payload": fields})
            }
            (true, 0) => {
                let last = odoo.remove(&key).unwrap_or_default();
                json!({"model": model, "record_id": id, "event": "unlink", "payload": last})
            }
            (true, _) => {
                odoo.insert(key, fields.clone());
                json!({"model": model, "record_id": id, "event": "write", "payload": fields})
            }
        };
        server.ingest_ok(json!([event])).await;
        match dice.below(10) {
            0 => {
                server.compact(&compact).await;
            }
            1 | 2 => {
                let at = dice.below(devices.len() as u64) as usize;
                let (user, device, replica) = &mut devices[at];
                let limit = dice.pick(&[1, 3, 100]);
                replica
                    .catch_up(&server, &session(*user), &pull(*user, device, limit))
                    .await;
            }
            3 => {
                // A pull that reads one page only.
                let at = dice.below(devices.len() as u64) as usize;
                let (user, device, replica) = &mut devices[at];
                let answer = server
                    .pull_ok(&session(*user), &pull(*user, device, 2))
                    .await;
                replica.apply(&answer);
            }
            _ => {}
        }
    }
    server.compact(&compact).await;

    for (user, device, replica) in &mut devices {
        replica
            .catch_up(&server, &session(*user), &pull(*user, device, 100))
            .await;
        let mut fresh = Replica::default();
        fresh
            .catch_up(
                &server,
                &session(*user),
                &pull(*user, &format!("new-{device}"), 50),
            )
            .await;
        let expected: BTreeMap<(String, i64), Value> = odoo
            .iter()
            .filter(|((model, _), record)| sees(*user, model, record))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect();
        assert_eq!(
            replica.records, expected,
            "seed {seed}: user {user}'s device {device} that pulled along"
        );
        assert_eq!(
            fresh.records, expected,
            "seed {seed}: user {user}'s device that first pulled at the end"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn every_device_converges_on_what_its_user_may_see() {
    for seed in 1..=10 {
        run(seed).await;
    }
}
