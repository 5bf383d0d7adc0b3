//! The manager's feed (`app_type = "manager_app"`): every business model, labelled.
//!
//! Two seed clients pull as `manager_app`: the React manager dashboard, which counts events per
//! model and shows each with a label, and the Python background service, which mirrors customers,
//! orders and products into an external CRM (hence `product.template`, which the dashboard does
//! not label). This plugin adds `data = {"label": ...}` with the dashboard's label for the event's
//! model, and keeps out the records of companies the manager may not see.
//!
//! Config (the `[plugins.<name>.config]` table in plugins.toml), every key optional:
//!
//! ```toml
//! filter_companies = true
//! [plugins.manager.config.labels]
//! "sale.order" = "Sales orders"      # replaces the Arabic default for this model
//! "product.template" = "Products"    # adds a label for a model without one
//! "hr.expense" = ""                  # no label for this model
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use smartsync_sdk::prelude::*;

/// The models the manager receives.
pub const MODELS: [&str; 6] = [
    "sale.order",
    "res.partner",
    "stock.picking",
    "account.move",
    "hr.expense",
    "product.template",
];

/// The seed dashboard's labels (`getModelName`): sales orders, customers, shipments, invoices,
/// expenses.
pub const DEFAULT_LABELS: [(&str, &str); 5] = [
    ("sale.order", "طلبات البيع"),
    ("res.partner", "العملاء"),
    ("stock.picking", "الشحنات"),
    ("account.move", "الفواتير"),
    ("hr.expense", "المصروفات"),
];

/// The plugin's config table. An empty table labels with the seed's Arabic labels and filters by
/// company.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The label sent as `data.label` for each model (default: [`DEFAULT_LABELS`]).
    ///
    /// The admin's table is merged over the defaults: a model it names gets that label, the
    /// others keep theirs. An empty label removes the model's label. Events of a model without a
    /// label carry no `data`.
    #[serde(deserialize_with = "labels_over_defaults")]
    pub labels: HashMap<String, String>,

    /// Keep out the records of companies the manager may not see (default `true`).
    ///
    /// An event whose payload has a `company_id` is kept only when that company is among the
    /// user's allowed companies (`Context::company_ids`), deletions included: Odoo's "On
    /// deletion" webhook may send the record's values as they were, and they are another company's
    /// as much as a write's. A record without a company (`"company_id": false`, shared records
    /// such as many products and customers) is everyone's, and its events are kept whole.
    ///
    /// A create or write whose payload does not name a company (no payload, or no `company_id`
    /// in it) is kept as it is. An unlink that does not say whose record it was (no payload, a
    /// payload that is not a JSON object, no `company_id` in it, or one that is not an id) is
    /// kept too, since a device may hold the record, but without its payload: its `data` (the
    /// model's label) says nothing of the record. A record moved to a company the manager may
    /// not see leaves their feed: their devices receive an `unlink` with `"reason":
    /// "left_feed"`.
    pub filter_companies: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            labels: default_labels(),
            filter_companies: true,
        }
    }
}

fn default_labels() -> HashMap<String, String> {
    DEFAULT_LABELS
        .iter()
        .map(|(model, label)| (model.to_string(), label.to_string()))
        .collect()
}

/// Reads the admin's labels and lays them over the defaults.
fn labels_over_defaults<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<HashMap<String, String>, D::Error> {
    let mut labels = default_labels();
    labels.extend(HashMap::<String, String>::deserialize(deserializer)?);
    Ok(labels)
}

/// The manager's plugin.
pub struct ManagerApp;

impl Feed for ManagerApp {
    type Config = Config;

    fn describe() -> Manifest {
        Manifest::new("manager_app", env!("CARGO_PKG_VERSION"))
            .with_models(&MODELS)
            .with_payloads()
    }

    /// Of the context, only the user's companies matter to the answer (`filter_companies`
    /// compares a record's company with the user's companies).
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        Some(vec![ContextField::CompanyIds])
    }

    fn holds(record: &Record<'_>, ctx: &Context, config: &Config) -> Holds {
        if !MODELS.contains(&record.model) {
            return Holds::No;
        }
        if !config.filter_companies {
            return Holds::Yes;
        }
        if record.raw("company_id").is_none() {
            // `false` (or `null`): a shared record; no key at all: the record does not say.
            return if record.has("company_id") {
                Holds::Yes
            } else {
                Holds::Unknown
            };
        }
        record
            .id("company_id")
            .map(|company| ctx.company_ids.contains(&company))
            .into()
    }

    /// A create or write that does not name its company is everyone's, as the seed's
    /// dashboard has it (see [`Config::filter_companies`]).
    fn unknown_is_held() -> bool {
        true
    }

    fn shape(event: &Event, ctx: &Context, config: &Config) -> ShapedEvent {
        let _ = ctx;
        let label = config
            .labels
            .get(&event.model)
            .filter(|label| !label.is_empty());
        let shaped = ShapedEvent::keep(event);
        match label {
            Some(label) => shaped.with_data(json!({ "label": label })),
            None => shaped,
        }
    }
}

smartsync_sdk::export_feed!(ManagerApp);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
