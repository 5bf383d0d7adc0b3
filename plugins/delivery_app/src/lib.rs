//! The delivery app's feed (`app_type = "delivery_app"`): shipments.
//!
//! The seed's React Native delivery app keeps only `stock.picking` events and tells the driver
//! about new, changed and cancelled shipments. This plugin sends only pickings, can narrow them to
//! the driver's outgoing deliveries, and adds a `data` object with the delivery status the app
//! shows, so it need not map Odoo's states itself:
//!
//! | payload `state` | `data.status` |
//! |---|---|
//! | `assigned` | `ready` |
//! | `done` | `delivered` |
//! | `cancel` | `cancelled` |
//! | any other | the state as it is (`draft`, `waiting`, `confirmed`, ...) |
//!
//! An event whose payload has no `state` gets no `data`. Payloads are sent as they are.
//!
//! Config (the `[plugins.<name>.config]` table in plugins.toml), every key optional:
//!
//! ```toml
//! only_outgoing = true           # deliveries to customers only, no receipts or transfers
//! only_assigned_to_me = true     # only the pickings assigned to the pulling user
//! assignee_field = "user_id"     # the payload field that names the assignee
//! ```

use serde::Deserialize;
use smartsync_sdk::prelude::*;

const PICKING: &str = "stock.picking";

/// The plugin's config table. An empty table sends every picking event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Send only outgoing pickings, those whose payload `picking_type_code` is `"outgoing"`
    /// (default `false`). A create or write without a payload or without that field is dropped;
    /// unlinks are always sent, since Odoo may not send a deleted picking's values and a device
    /// may hold it.
    pub only_outgoing: bool,

    /// Send only the pickings assigned to the pulling user: those whose payload field
    /// `assignee_field` holds the user's id (default `false`). A create or write without a
    /// payload or without an assignee is dropped; unlinks are always sent.
    pub only_assigned_to_me: bool,

    /// The many2one field of `stock.picking` that names the driver, for `only_assigned_to_me`
    /// (default `"user_id"`, Odoo's "Responsible"). Set it when drivers are recorded in a
    /// custom field, such as `x_driver_id`.
    pub assignee_field: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            only_outgoing: false,
            only_assigned_to_me: false,
            assignee_field: "user_id".to_string(),
        }
    }
}

/// The delivery app's plugin.
pub struct DeliveryApp;

impl Plugin for DeliveryApp {
    fn describe() -> Manifest {
        Manifest::new("delivery_app", env!("CARGO_PKG_VERSION"))
            .with_models(&[PICKING])
            .with_payloads()
    }

    /// Each event is shaped on its own; of the context, only the user matters to the answer
    /// (`only_assigned_to_me` compares a picking's assignee with the user).
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        Some(vec![ContextField::UserId])
    }

    fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        let config: Config = parse_config(&ctx)?;

        let mut shaped = Vec::with_capacity(events.len());
        for event in events {
            if event.model != PICKING {
                continue;
            }
            let payload = event.payload();
            if event.kind != EventKind::Unlink {
                let field = |name: &str| payload.as_ref().and_then(|p| p.str(name));
                if config.only_outgoing && field("picking_type_code").as_deref() != Some("outgoing")
                {
                    continue;
                }
                let assignee = payload.as_ref().and_then(|p| p.id(&config.assignee_field));
                if config.only_assigned_to_me && assignee != Some(ctx.user_id) {
                    continue;
                }
            }

            let status = payload
                .as_ref()
                .and_then(|p| p.str("state"))
                .map(|state| delivery_status(&state).to_string());
            let event = ShapedEvent::keep(event);
            shaped.push(match status {
                Some(status) => event.with_data(json!({ "status": status })),
                None => event,
            });
        }
        Ok(shaped)
    }
}

/// The delivery status the app shows for a picking's Odoo `state`.
pub fn delivery_status(state: &str) -> &str {
    match state {
        "assigned" => "ready",
        "done" => "delivered",
        "cancel" => "cancelled",
        other => other,
    }
}

smartsync_sdk::export_plugin!(DeliveryApp);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
