//! What `smartsync plugin check` and `smartsync plugin run` do: load a `.wasm` outside the server
//! and call it on given events, so an integrator sees what a device would receive.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CallContext, LoadedPlugin, PluginEngine, PluginLimits};
use crate::event::{Event, EventKind, LoggedEvent, Prior, normalize_timestamp, now_rfc3339};

/// An event given on the command line (`--events`): the ingest API's fields plus `id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenEvent {
    pub id: i64,
    pub model: String,
    pub record_id: i64,
    pub event: EventKind,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    #[serde(default)]
    pub changed_fields: Option<Vec<String>>,
    /// What the record was before: `"none"` (it did not exist), `"unknown"`, or the values
    /// before the event of the fields it changed. Absent: none for a create, and for another
    /// change, the record was as its payload says (nothing the plugin reads changed).
    #[serde(default)]
    pub prior: Option<GivenPrior>,
}

/// A given event's `prior`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum GivenPrior {
    Said(SaidPrior),
    Changed(Map<String, Value>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaidPrior {
    None,
    Unknown,
}

/// The caller given on the command line (`--context`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenContext {
    pub user_id: i64,
    #[serde(default = "default_device")]
    pub device_id: String,
    #[serde(default = "default_app_type")]
    pub app_type: String,
    #[serde(default = "default_companies")]
    pub company_ids: Vec<i64>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    /// The plugin's config table, as plugins.toml would give it.
    #[serde(default)]
    pub config: Map<String, Value>,
}

fn default_device() -> String {
    "cli".into()
}

fn default_app_type() -> String {
    "cli".into()
}

fn default_companies() -> Vec<i64> {
    vec![1]
}

/// Loads `wasm` with `config` (a JSON object) on a fresh engine without a disk cache.
pub fn load(wasm: &Path, config: &Map<String, Value>) -> anyhow::Result<Arc<LoadedPlugin>> {
    let bytes =
        std::fs::read(wasm).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", wasm.display()))?;
    let engine = PluginEngine::new(None)?;
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let plugin = engine
        .load(
            &name,
            &bytes,
            Value::Object(config.clone()).to_string(),
            PluginLimits::default(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", wasm.display()))?;
    Ok(Arc::new(plugin))
}

pub fn logged(events: Vec<GivenEvent>) -> anyhow::Result<Vec<Arc<LoggedEvent>>> {
    let now = now_rfc3339();
    let mut last = 0;
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.id <= last {
                anyhow::bail!("events[{i}].id: ids must increase ({} after {last})", e.id);
            }
            last = e.id;
            let timestamp = match &e.timestamp {
                Some(t) => normalize_timestamp(t).ok_or_else(|| {
                    anyhow::anyhow!("events[{i}].timestamp: {t:?} is not RFC 3339")
                })?,
                None => now.clone(),
            };
            Ok(LoggedEvent::new(Event {
                id: e.id,
                model: e.model,
                record_id: e.record_id,
                kind: e.event,
                timestamp,
                payload: e.payload.map(|p| Value::Object(p).to_string()),
                changed_fields: e.changed_fields,
                received_at: now.clone(),
                rev: 0,
                prior: match e.prior {
                    Some(GivenPrior::Said(SaidPrior::None)) => Prior::None,
                    Some(GivenPrior::Said(SaidPrior::Unknown)) => Prior::Unknown,
                    Some(GivenPrior::Changed(values)) => {
                        Prior::Changed(Value::Object(values).to_string())
                    }
                    None if e.event == EventKind::Create => Prior::None,
                    None => Prior::Changed("{}".into()),
                },
                folded: None,
            }))
        })
        .collect()
}

/// Calls the plugin on `events` for `ctx`, returning what a device would receive, in the
/// pull answer's form.
pub async fn run(
    plugin: &Arc<LoadedPlugin>,
    ctx: &GivenContext,
    events: &[Arc<LoggedEvent>],
) -> anyhow::Result<Vec<Value>> {
    let call = CallContext {
        user_id: ctx.user_id,
        device_id: ctx.device_id.clone(),
        app_type: ctx.app_type.clone(),
        company_ids: ctx.company_ids.clone(),
        lang: ctx.lang.clone(),
        tz: ctx.tz.clone(),
    };
    let wanted: Vec<Arc<LoggedEvent>> = events
        .iter()
        .filter(|e| {
            plugin.manifest.models.is_empty() || plugin.manifest.models.contains(&e.event.model)
        })
        .cloned()
        .collect();
    let shaped = plugin.shape(&call, &wanted).await?;
    shaped
        .iter()
        .map(|s| {
            let source = wanted
                .iter()
                .find(|e| e.event.id == s.id)
                .ok_or_else(|| anyhow::anyhow!("event {} is not in the input", s.id))?;
            Ok(serde_json::from_str(&source.event.wire_json_with(
                s.payload.resolve(source.event.payload.as_deref()),
                s.data.as_deref(),
            ))?)
        })
        .collect()
}

/// A smoke call: one create, write and unlink of each model the plugin wants.
pub async fn check(plugin: &Arc<LoadedPlugin>) -> anyhow::Result<(usize, usize)> {
    let models = if plugin.manifest.models.is_empty() {
        vec!["res.partner".to_string()]
    } else {
        plugin.manifest.models.clone()
    };
    let mut events = Vec::new();
    for model in &models {
        for kind in [EventKind::Create, EventKind::Write, EventKind::Unlink] {
            events.push(GivenEvent {
                id: events.len() as i64 + 1,
                model: model.clone(),
                record_id: 1,
                event: kind,
                timestamp: None,
                payload: Some(Map::from_iter([("id".to_string(), Value::from(1))])),
                changed_fields: None,
                prior: None,
            });
        }
    }
    let events = logged(events)?;
    let ctx = GivenContext {
        user_id: 1,
        device_id: default_device(),
        app_type: default_app_type(),
        company_ids: default_companies(),
        lang: None,
        tz: None,
        config: Map::new(),
    };
    let out = run(plugin, &ctx, &events).await?;
    Ok((events.len(), out.len()))
}
