//! Convergence through Odoo, with loss: records exist before Smart Sync is connected; then a
//! random workload runs in (the stand-in) Odoo while a fraction of its webhooks are lost, some
//! records go by cascades that post nothing, some deletions are posted and then refused, and
//! the server is stopped for a while; devices
//! pull at random moments. After the next sweep and ids check, every device (and a new one)
//! holds exactly what its user may see of what Odoo holds, with the same values.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use smartsync_tests::odoo::FakeOdoo;
use smartsync_tests::{Dice, Replica, TestServer, bundled_plugins_toml, session};

use super::odoo_sync::{next_sweep, synced_server, wait_for};

const SALESPERSON: i64 = 5;
const MANAGER: i64 = 7; // companies 1 and 3 (the test sessions' user 7)

const MODELS: [&str; 2] = ["res.partner", "sale.order"];

/// Who sees what, as the plugins are configured here.
fn sees(user: i64, model: &str, record: &Map<String, Value>) -> bool {
    match user {
        SALESPERSON => model == "res.partner" || record["user_id"] == SALESPERSON,
        _ => match &record["company_id"] {
            Value::Bool(false) => true,
            company => matches!(company.as_i64(), Some(1 | 3)),
        },
    }
}

fn app_type(user: i64) -> &'static str {
    if user == SALESPERSON {
        "sales_app"
    } else {
        "manager_app"
    }
}

fn pull(user: i64, device: &str, limit: u64) -> Value {
    let coalesce = device.ends_with("-c");
    json!({"user_id": user, "device_id": device, "app_type": app_type(user), "limit": limit,
           "coalesce": coalesce})
}

fn fields(dice: &mut Dice, model: &str, n: u64) -> Value {
    let company = match dice.below(4) {
        0 => json!(false),
        c => json!(c),
    };
    match model {
        "res.partner" => {
            json!({"name": format!("Partner {n}"), "email": format!("p{n}@example.com"),
            "active": dice.below(6) != 0, "company_id": company})
        }
        _ => json!({"name": format!("S{n:05}"), "state": dice.pick(&["draft", "sale", "done"]),
            "user_id": dice.pick(&[SALESPERSON, SALESPERSON, 6]), "company_id": company,
            "amount_total": (dice.below(10_000) as f64) / 4.0}),
    }
}

/// What Odoo holds of `model`, as a payload carries it: the synced fields, `id`, `write_date`.
fn odoo_records(
    odoo: &FakeOdoo,
    server: &TestServer,
) -> BTreeMap<(String, i64), Map<String, Value>> {
    let mut all = BTreeMap::new();
    for model in MODELS {
        let carried = server.config.odoo.models[model].read_fields();
        for id in odoo.db.ids(model) {
            let record = odoo.db.record(model, id).expect("listed");
            let kept: Map<String, Value> = record
                .into_iter()
                .filter(|(k, _)| k == "id" || carried.contains(k))
                .collect();
            all.insert((model.to_string(), id), kept);
        }
    }
    all
}

async fn run(seed: u64) {
    let odoo = FakeOdoo::start().await;
    let mut dice = Dice(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut n = 0;
    for model in MODELS {
        for _ in 0..8 {
            n += 1;
            let values = fields(&mut dice, model, n);
            odoo.db.insert(model, values);
        }
    }
    let mut server = synced_server(&odoo, |c| {
        for model in MODELS {
            let settings = c.odoo.models.get_mut(model).expect("synced");
            settings.fields.push("company_id".into());
        }
    })
    .await;
    let toml = bundled_plugins_toml().replace(
        "[plugins.delivery_app]",
        "[plugins.sales_app.config]\nonly_own_orders = true\n\n[plugins.delivery_app]",
    ) + "[plugins.manager_app.config]\nfilter_companies = true\n";
    assert_eq!(server.set_plugins(&toml).await.status(), 200);
    let mut config = server.config.clone();
    config.odoo.webhook_base_url = server.base();
    smartsync::odoo::commands::connect(&config, false)
        .await
        .expect("connect");
    odoo.db.set_webhook_loss(300, seed);

    let users = [SALESPERSON, MANAGER];
    let mut devices: Vec<(i64, &str, Replica)> = users
        .iter()
        .flat_map(|&u| {
            [
                (u, "phone", Replica::default()),
                (u, "phone-c", Replica::default()),
            ]
        })
        .collect();
    let steps = 120;
    let (halt_at, resume_at) = (40 + dice.below(20), 70 + dice.below(20));
    for step in 0..steps {
        if step == halt_at {
            server.halt().await;
        }
        if step == resume_at {
            server.resume().await;
        }
        let model = dice.pick(&MODELS);
        let ids = odoo.db.ids(model);
        match (ids.is_empty(), dice.below(10)) {
            (true, _) | (_, 0 | 1) => {
                n += 1;
                let values = fields(&mut dice, model, n);
                odoo.db.create(model, values).await;
            }
            (false, 2) => {
                let id = dice.pick(&ids);
                odoo.db.unlink(model, id).await;
            }
            (false, 4) if model == "sale.order" => {
                // Odoo posts the deletion, then refuses it (a confirmed order) and rolls back.
                let id = dice.pick(&ids);
                odoo.db.unlink_refused(model, id).await;
            }
            (false, 3) => {
                // A cascade, or a module writing SQL: no webhook at all.
                let id = dice.pick(&ids);
                odoo.db.delete_silently(model, id);
            }
            (false, _) => {
                let id = dice.pick(&ids);
                let values = fields(&mut dice, model, id as u64);
                odoo.db.write(model, id, values).await;
            }
        }
        if dice.below(15) == 0 {
            // Now and then a pause, so that versions spread over several seconds.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        let halted = step >= halt_at && step < resume_at;
        if !halted && dice.below(8) == 0 {
            let at = dice.below(devices.len() as u64) as usize;
            let (user, device, replica) = &mut devices[at];
            let limit = dice.pick(&[1, 3, 100]);
            replica
                .catch_up(&server, &session(*user), &pull(*user, device, limit))
                .await;
        }
    }
    // The next sweep and ids check bring back what the webhooks did not.
    next_sweep(&server).await;
    let checked = super::odoo_sync::odoo_status(&server).await;
    wait_for(&server, "an ids check after the sweep", |s| {
        MODELS
            .iter()
            .all(|m| s["models"][m]["ids_checked_at"] != checked["models"][m]["ids_checked_at"])
    })
    .await;

    let odoo_now = odoo_records(&odoo, &server);
    let (posted, dropped) = odoo.db.webhooks();
    assert!(
        dropped > 0 && posted > 0,
        "the workload lost some webhooks: {posted} {dropped}"
    );
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
        let expected: BTreeMap<(String, i64), Value> = odoo_now
            .iter()
            .filter(|((model, _), record)| sees(*user, model, record))
            .map(|(key, record)| (key.clone(), Value::Object(record.clone())))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_converges_on_what_odoo_holds_despite_lost_webhooks_and_an_outage() {
    for seed in 1..=4 {
        run(seed).await;
    }
}
