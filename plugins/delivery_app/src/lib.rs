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
//! An event whose payload has no `state` gets no `data`. Payloads are sent as they are, but for
//! deletions that the config's filters cannot judge, which are sent with neither payload nor
//! `data` (see [`Config`]).
//!
//! A picking that leaves the driver's feed (assigned to another driver, or no longer outgoing)
//! is removed from their devices: an `unlink` with `"reason": "left_feed"`.
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
    /// (default `false`). An event whose payload names another type is dropped, deletions
    /// included. A create or write without a payload or without that field is dropped too; such
    /// an unlink is sent without its payload or `data`, unless `only_assigned_to_me` drops it
    /// (see [`Config::only_assigned_to_me`]).
    pub only_outgoing: bool,

    /// Send only the pickings assigned to the pulling user: those whose payload field
    /// `assignee_field` holds the user's id (default `false`). An event whose payload names
    /// another assignee is dropped, deletions included: Odoo's "On deletion" webhook may send the
    /// picking's values as they were, and these are another driver's. A create or write without a
    /// payload or without an assignee is dropped too.
    ///
    /// An unlink that neither filter drops but one of them cannot judge (no payload, a payload
    /// that is not a JSON object, or the field missing, `false` or unreadable) is sent, since a
    /// device may hold the picking, but without its payload and without `data`: the status comes
    /// from the picking's values, which may be someone else's.
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

impl Feed for DeliveryApp {
    type Config = Config;

    fn describe() -> Manifest {
        Manifest::new("delivery_app", env!("CARGO_PKG_VERSION"))
            .with_models(&[PICKING])
            .with_payloads()
    }

    /// Of the context, only the user matters to the answer (`only_assigned_to_me` compares a
    /// picking's assignee with the user).
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        Some(vec![ContextField::UserId])
    }

    fn holds(picking: &Record<'_>, ctx: &Context, config: &Config) -> Holds {
        if picking.model != PICKING {
            return Holds::No;
        }
        let mut holds = Holds::Yes;
        if config.only_outgoing {
            let code = picking.str("picking_type_code");
            holds = holds.and(code.map(|code| code == "outgoing").into());
        }
        if config.only_assigned_to_me {
            let assignee = picking.id(&config.assignee_field);
            holds = holds.and(assignee.map(|user| user == ctx.user_id).into());
        }
        holds
    }

    fn shape(event: &Event, _ctx: &Context, _config: &Config) -> ShapedEvent {
        let status = event.payload().and_then(|p| {
            p.str("state")
                .map(|state| delivery_status(&state).to_string())
        });
        let shaped = ShapedEvent::keep(event);
        match status {
            Some(status) => shaped.with_data(json!({ "status": status })),
            None => shaped,
        }
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

smartsync_sdk::export_feed!(DeliveryApp);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
