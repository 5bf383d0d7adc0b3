//! `smartsync odoo connect | status | import`: what an admin runs, as text reports.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::rules::{self, RuleState};
use super::{Client, Credentials, Model, Source, import, state};
use crate::config::Config;
use crate::log::{EventLog, TailLimits};
use crate::store::{self, Access};

/// A client for the Odoo of `config`, after checking that it is Odoo and takes the login.
async fn login(config: &Config) -> anyhow::Result<(Client, String)> {
    if !config.odoo.enabled() {
        anyhow::bail!(
            "`[odoo.models]` names no model: say which models to sync (see `smartsync config example`)"
        );
    }
    let credentials = Credentials {
        url: config.odoo_url().to_string(),
        database: config.odoo.database.clone(),
        login: config.odoo.login.clone(),
        api_key: config.odoo.api_key.clone().unwrap_or_default(),
    };
    let client = Client::new(credentials, Duration::from_millis(config.odoo.timeout_ms))
        .map_err(anyhow::Error::msg)?;
    let version = client.version().await?;
    let serie = version["server_serie"].as_str().unwrap_or("?").to_string();
    client.authenticate().await?;
    let c = client.credentials();
    let header = format!(
        "Odoo {serie} at {}, database {:?}, as {:?}",
        super::rpc::shown_url(&c.url),
        c.database,
        c.login
    );
    Ok((client, header))
}

/// The rules `config` needs, against what Odoo has.
async fn plan(config: &Config, client: &Client) -> anyhow::Result<Vec<rules::Rule>> {
    let secrets = crate::secrets::resolve(config).map_err(anyhow::Error::msg)?;
    Ok(rules::plan(
        client,
        &config.odoo.models,
        &config.odoo.webhook_base_url,
        &secrets.ingest_token,
    )
    .await?)
}

fn state_word(state: &RuleState) -> String {
    match state {
        RuleState::Present => "present".into(),
        RuleState::Missing => "missing".into(),
        RuleState::Differs(what) => format!("differs: {}", what.join(", ")),
    }
}

/// Creates or updates the webhook rules; with `dry_run`, only says what it would do.
pub async fn connect(config: &Config, dry_run: bool) -> anyhow::Result<String> {
    let (client, header) = login(config).await?;
    let plan = plan(config, &client).await?;
    if !dry_run {
        rules::apply(&client, &plan).await?;
    }
    let mut out = format!("{header}\n");
    let mut changes = 0;
    for rule in &plan {
        let done = match (&rule.state, dry_run) {
            (RuleState::Present, _) => "unchanged".to_string(),
            (RuleState::Missing, false) => "created".to_string(),
            (RuleState::Missing, true) => "would create".to_string(),
            (RuleState::Differs(what), false) => format!("updated ({})", what.join(", ")),
            (RuleState::Differs(what), true) => format!("would update ({})", what.join(", ")),
        };
        if rule.state != RuleState::Present {
            changes += 1;
        }
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<28} {} -> {}",
            rule.model,
            rule.trigger,
            done,
            rule.name,
            rule.shown_url()
        );
    }
    let _ = writeln!(
        out,
        "{changes} rule(s) {}",
        if dry_run {
            "would change"
        } else {
            "created or updated"
        }
    );
    Ok(out)
}

/// The rules in Odoo, and what the server's database says of the import, the webhooks, the
/// sweep and the ids check.
pub async fn status(config: &Config) -> anyhow::Result<String> {
    let (client, header) = login(config).await?;
    let plan = plan(config, &client).await;
    let mut out = format!("{header}\n");
    let states = match store::open(&config.database.store_settings(), Access::Read).await {
        Ok(store) => {
            let states = state::load(store.as_ref()).await;
            store.close().await;
            states
        }
        Err(e) => Err(e),
    };
    let states = match states {
        Ok(states) => Some(states),
        Err(e) => {
            let _ = writeln!(out, "the server's database cannot be read: {e}");
            None
        }
    };
    for model in config.odoo.models.keys() {
        let _ = writeln!(out, "\n{model}");
        match &plan {
            Ok(plan) => {
                for rule in plan.iter().filter(|r| &r.model == model) {
                    let _ = writeln!(
                        out,
                        "  rule {:<10} {}",
                        rule.trigger,
                        state_word(&rule.state)
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  rules: {e}");
            }
        }
        let state = states.as_ref().and_then(|s| s.get(model));
        let Some(s) = state else {
            let _ = writeln!(out, "  not imported yet (the server imports on start)");
            continue;
        };
        let never = || "never".to_string();
        let import = match &s.import_finished_at {
            Some(at) => format!(
                "finished {at}: {} records read, {} new",
                s.import_read, s.import_stored
            ),
            None => format!("running or interrupted: {} records read", s.import_read),
        };
        let _ = writeln!(out, "  import      {import}");
        let _ = writeln!(
            out,
            "  webhook     last received {}",
            s.last_webhook_at.clone().unwrap_or_else(never)
        );
        let _ = writeln!(
            out,
            "  sweep       last {}; recovered {} last time, {} in all (webhooks Odoo lost)",
            s.last_sweep_at.clone().unwrap_or_else(never),
            s.last_sweep_recovered,
            s.sweep_recovered
        );
        let _ = writeln!(
            out,
            "  ids check   last {}; {} deletions and {} records recovered in all",
            s.ids_checked_at.clone().unwrap_or_else(never),
            s.deletions_recovered,
            s.records_recovered
        );
    }
    Ok(out)
}

/// The address at which this machine reaches the server of `config`.
fn local_server(config: &Config) -> String {
    let listen = &config.server.listen;
    let local = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{local}")
}

/// Imports `models` (every synced model when empty) again: through the running server when
/// there is one (it imports in the background; this follows its progress), else here.
pub async fn import(config: &Config, models: &[String]) -> anyhow::Result<String> {
    if !config.odoo.enabled() {
        anyhow::bail!("`[odoo.models]` names no model: there is nothing to import");
    }
    if let Some(unknown) = models.iter().find(|m| !config.odoo.models.contains_key(*m)) {
        anyhow::bail!("{unknown:?} is not a synced model (see `[odoo.models]`)");
    }
    let secrets = crate::secrets::resolve(config).map_err(anyhow::Error::msg)?;
    let base = local_server(config);
    let http = reqwest::Client::new();
    let started = chrono::Utc::now();
    let asked = http
        .post(format!("{base}/api/v2/admin/odoo/import"))
        .bearer_auth(&secrets.admin_token)
        .json(&json!({"models": models}))
        .send()
        .await;
    match asked {
        Ok(response) => {
            follow_server_import(&http, &base, &secrets.admin_token, response, started).await
        }
        Err(e) if e.is_connect() => import_here(config, models).await,
        Err(e) => Err(anyhow::anyhow!("asking the server at {base}: {e}")),
    }
}

async fn follow_server_import(
    http: &reqwest::Client,
    base: &str,
    admin_token: &str,
    response: reqwest::Response,
    started: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<String> {
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!(
            "the server at {base} refused: {}",
            answer["message"].as_str().unwrap_or("no reason given")
        );
    }
    let models: Vec<String> = answer["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "the server at {base} imports {} in the background",
        models.join(", ")
    );
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view: Value = http
            .get(format!("{base}/api/v2/admin/odoo"))
            .bearer_auth(admin_token)
            .send()
            .await?
            .json()
            .await?;
        let mut done = true;
        let mut line = String::new();
        for model in &models {
            let m = &view["models"][model];
            let finished = m["import_finished_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= started);
            done &= finished;
            let progress = &m["import"];
            let _ = write!(
                line,
                "{model}: {} ",
                if finished {
                    format!("done ({} read)", m["import_read"])
                } else if progress.is_object() {
                    format!("{}/{}", progress["read"], progress["total"])
                } else {
                    "waiting".to_string()
                }
            );
        }
        eprintln!("{line}");
        if view["connection"] == "failing" {
            anyhow::bail!(
                "the server cannot read Odoo: {}",
                view["error"].as_str().unwrap_or("no reason given")
            );
        }
        if done {
            return Ok(format!("imported {}\n", models.join(", ")));
        }
    }
}

/// Imports with no server running: opens the database itself.
async fn import_here(config: &Config, models: &[String]) -> anyhow::Result<String> {
    let (client, header) = login(config).await?;
    eprintln!("{header}; no server is running, importing here");
    let store = store::open(&config.database.store_settings(), Access::Write).await?;
    let log = Arc::new(
        EventLog::open(
            store.clone(),
            TailLimits {
                max_events: 1,
                max_bytes: 1 << 20,
            },
            config.ingest.group_commit_max_events,
        )
        .await?,
    );
    let source = Source {
        client,
        store: store.clone(),
        log: log.clone(),
        page_size: config.odoo.page_size,
        keeps_every_record: config.retention.mode == crate::config::RetentionMode::Compact,
    };
    let mut states = state::load(store.as_ref()).await?;
    let overlap = chrono::Duration::from_std(config.odoo.sweep_overlap.duration())
        .unwrap_or_else(|_| chrono::Duration::seconds(300));
    let mut out = String::new();
    let mut result = Ok(());
    for (name, settings) in &config.odoo.models {
        if !models.is_empty() && !models.contains(name) {
            continue;
        }
        let model = Model { name, settings };
        let state = states.entry(name.clone()).or_default();
        state.import_started_at = None;
        state.import_finished_at = None;
        let imported = import::run(&source, &model, overlap, state, |p| {
            eprintln!("{name}: {}/{} read, {} new", p.read, p.total, p.stored);
        })
        .await;
        if let Err(e) = imported {
            result = Err(anyhow::anyhow!("importing {name}: {e}"));
            break;
        }
        let _ = writeln!(
            out,
            "{name}: {} records read, {} new",
            state.import_read, state.import_stored
        );
    }
    log.close().await;
    store.close().await;
    result.map(|()| out)
}
