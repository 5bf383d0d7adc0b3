//! The webhook rules in Odoo: what `smartsync odoo connect` creates and `smartsync odoo status`
//! checks.
//!
//! Per synced model, three automation rules (`base.automation`, in
//! `addons/base_automation/models/base_automation.py`), each with one "Send Webhook
//! Notification" server action (`ir.actions.server` with `state = "webhook"`, in
//! `odoo/addons/base/models/ir_actions.py`): on creation, on update and on deletion, posting
//! the model's fields to `<webhook_base_url>/api/v2/webhooks/odoo?token=…&event=<kind>`.
//!
//! A rule is ours when it is on the model, has the trigger, and one of its actions posts to
//! this server's webhook path, whatever its name: a rule made by hand after the README's
//! recipe is found, and brought in line rather than doubled.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Client, RpcError};
use crate::config::OdooModelConfig;

/// The webhook path, as the rules' URLs hold it.
pub const WEBHOOK_PATH: &str = "/api/v2/webhooks/odoo";

/// The three rules of a model: Odoo's trigger, the event kind the URL names, and how the rule
/// is called.
pub const TRIGGERS: [(&str, &str, &str); 3] = [
    ("on_create", "create", "created"),
    ("on_write", "write", "updated"),
    ("on_unlink", "unlink", "deleted"),
];

/// Where one rule stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleState {
    /// In Odoo, as it should be.
    Present,
    /// Not in Odoo.
    Missing,
    /// In Odoo, but these differ from what it should be.
    Differs(Vec<String>),
}

/// One rule: what it should be, and what Odoo has. (`Debug` leaves the URL, which holds the
/// token, out.)
#[derive(Clone)]
pub struct Rule {
    pub model: String,
    pub trigger: &'static str,
    pub name: String,
    pub state: RuleState,
    /// The rule and its webhook action in Odoo, when they exist.
    pub automation_id: Option<i64>,
    pub action_id: Option<i64>,
    /// The URL the rule should post to.
    url: String,
    model_id: i64,
    field_ids: Vec<i64>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("model", &self.model)
            .field("trigger", &self.trigger)
            .field("state", &self.state)
            .field("url", &self.shown_url())
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// The URL with the token left out, for showing.
    pub fn shown_url(&self) -> String {
        redact_token(&self.url)
    }
}

/// `url` with the value of `token=` replaced by `…`.
pub fn redact_token(url: &str) -> String {
    match url.find("token=") {
        Some(at) => {
            let start = at + "token=".len();
            let end = url[start..]
                .find('&')
                .map_or(url.len(), |offset| start + offset);
            format!("{}…{}", &url[..start], &url[end..])
        }
        None => url.to_string(),
    }
}

/// Why the rules cannot be checked or made.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("{0}")]
    Setup(String),
}

fn protocol(what: impl Into<String>) -> RulesError {
    RulesError::Rpc(RpcError::Protocol(what.into()))
}

fn ids_of(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

/// Reads what Odoo has and compares it with what `models` need: nothing is changed.
///
/// Fails when a model is not installed or lacks a field, before anything is made.
pub async fn plan(
    client: &Client,
    models: &BTreeMap<String, OdooModelConfig>,
    webhook_base_url: &str,
    ingest_token: &str,
) -> Result<Vec<Rule>, RulesError> {
    if webhook_base_url.is_empty() {
        return Err(RulesError::Setup(
            "`odoo.webhook_base_url` is not set: the URL at which Odoo reaches this server \
             (http://smartsync.internal:8080)"
                .into(),
        ));
    }
    let names: Vec<&String> = models.keys().collect();
    let installed = client
        .search_read_in(
            "ir.model",
            json!([["model", "in", names]]),
            &["model", "name"],
        )
        .await?;
    let mut model_ids = BTreeMap::new();
    for row in &installed {
        if let (Some(model), Some(id)) = (row["model"].as_str(), row["id"].as_i64()) {
            model_ids.insert(model.to_string(), id);
        }
    }
    let mut rules = Vec::new();
    for (model, settings) in models {
        let Some(&model_id) = model_ids.get(model) else {
            return Err(RulesError::Setup(format!(
                "Odoo has no model {model:?}: is its module installed?"
            )));
        };
        let wanted = settings.read_fields();
        let found = client
            .search_read_in(
                "ir.model.fields",
                json!([["model", "=", model], ["name", "in", wanted]]),
                &["name", "ttype"],
            )
            .await?;
        let mut field_ids = Vec::new();
        for name in &wanted {
            let row = found.iter().find(|r| r["name"] == name.as_str());
            match row.and_then(|r| r["id"].as_i64()) {
                Some(id) => field_ids.push(id),
                None => {
                    return Err(RulesError::Setup(format!(
                        "{model} has no field {name:?} (`odoo.models.\"{model}\".fields`)"
                    )));
                }
            }
            if let Some(kind @ ("binary" | "one2many")) = row.and_then(|r| r["ttype"].as_str()) {
                return Err(RulesError::Setup(format!(
                    "{model}.{name} is a {kind} field: webhooks and reads render it differently \
                     (binary), or it grows without bound (one2many); leave it out of \
                     `odoo.models.\"{model}\".fields`"
                )));
            }
        }
        field_ids.sort_unstable();

        let automations = client
            .search_read_in(
                "base.automation",
                json!([["model_id", "=", model_id]]),
                &["name", "trigger", "active", "action_server_ids"],
            )
            .await?;
        let action_ids: Vec<i64> = automations
            .iter()
            .flat_map(|a| ids_of(&a["action_server_ids"]))
            .collect();
        let actions = if action_ids.is_empty() {
            Vec::new()
        } else {
            client
                .search_read_in(
                    "ir.actions.server",
                    json!([["id", "in", action_ids]]),
                    &["name", "state", "webhook_url", "webhook_field_ids"],
                )
                .await?
        };
        let base = format!("{}{WEBHOOK_PATH}", webhook_base_url.trim_end_matches('/'));
        for (trigger, kind, label) in TRIGGERS {
            let url =
                reqwest::Url::parse_with_params(&base, [("token", ingest_token), ("event", kind)])
                    .map_err(|e| {
                        RulesError::Setup(format!(
                            "`odoo.webhook_base_url` = {webhook_base_url:?}: {e}"
                        ))
                    })?
                    .to_string();
            let ours = automations
                .iter()
                .filter(|a| a["trigger"] == trigger)
                .find_map(|a| {
                    let action = ids_of(&a["action_server_ids"]).into_iter().find_map(|id| {
                        actions.iter().find(|x| {
                            x["id"] == id
                                && x["state"] == "webhook"
                                && x["webhook_url"]
                                    .as_str()
                                    .is_some_and(|u| u.contains(WEBHOOK_PATH))
                        })
                    })?;
                    Some((a, action))
                });
            let (state, automation_id, action_id) = match ours {
                None => (RuleState::Missing, None, None),
                Some((automation, action)) => {
                    let mut differs = Vec::new();
                    if automation["active"] != true {
                        differs.push("archived".to_string());
                    }
                    if action["webhook_url"] != url.as_str() {
                        differs.push(format!(
                            "posts to {}",
                            redact_token(action["webhook_url"].as_str().unwrap_or(""))
                        ));
                    }
                    let mut has = ids_of(&action["webhook_field_ids"]);
                    has.sort_unstable();
                    if has != field_ids {
                        differs.push("sends other fields".to_string());
                    }
                    let state = if differs.is_empty() {
                        RuleState::Present
                    } else {
                        RuleState::Differs(differs)
                    };
                    (state, automation["id"].as_i64(), action["id"].as_i64())
                }
            };
            rules.push(Rule {
                model: model.clone(),
                trigger,
                name: format!("Smart Sync: {model} {label}"),
                state,
                automation_id,
                action_id,
                url,
                model_id,
                field_ids: field_ids.clone(),
            });
        }
    }
    Ok(rules)
}

/// Creates the missing rules and brings the differing ones in line; present ones are left
/// alone. Returns the rules as they were before.
pub async fn apply(client: &Client, rules: &[Rule]) -> Result<(), RulesError> {
    for rule in rules {
        match &rule.state {
            RuleState::Present => {}
            RuleState::Missing => {
                let action = json!({
                    "name": rule.name,
                    "model_id": rule.model_id,
                    "state": "webhook",
                    "usage": "base_automation",
                    "webhook_url": rule.url,
                    "webhook_field_ids": [[6, 0, rule.field_ids]],
                });
                client
                    .execute_kw(
                        "base.automation",
                        "create",
                        json!([{
                            "name": rule.name,
                            "model_id": rule.model_id,
                            "trigger": rule.trigger,
                            "active": true,
                            "action_server_ids": [[0, 0, action]],
                        }]),
                        json!({}),
                    )
                    .await?;
            }
            RuleState::Differs(_) => {
                let (Some(automation), Some(action)) = (rule.automation_id, rule.action_id) else {
                    return Err(protocol("a rule without its ids"));
                };
                client
                    .execute_kw(
                        "base.automation",
                        "write",
                        json!([[automation], {"active": true}]),
                        json!({}),
                    )
                    .await?;
                client
                    .execute_kw(
                        "ir.actions.server",
                        "write",
                        json!([[action], {
                            "webhook_url": rule.url,
                            "webhook_field_ids": [[6, 0, rule.field_ids]],
                        }]),
                        json!({}),
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

impl Client {
    /// `fields` of every record of `model` matching `domain`, archived ones included (few:
    /// rules, models, fields).
    async fn search_read_in(
        &self,
        model: &str,
        domain: Value,
        fields: &[&str],
    ) -> Result<Vec<Value>, RulesError> {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let rows = self
            .search_read(model, domain, &fields, "id asc", 10_000)
            .await?;
        Ok(rows.into_iter().map(Value::Object).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_not_shown() {
        assert_eq!(
            redact_token("http://h/api/v2/webhooks/odoo?token=secret123&event=write"),
            "http://h/api/v2/webhooks/odoo?token=…&event=write"
        );
        assert_eq!(redact_token("http://h/x?token=abc"), "http://h/x?token=…");
        assert_eq!(redact_token("http://h/x"), "http://h/x");
    }
}
