//! The sales app's feed (`app_type = "sales_app"`): orders, customers and products.
//!
//! The seed's Flutter sales app handles `sale.order` create, write and unlink, and `res.partner`
//! and `product.template` create and write. It has nothing to do with a deleted customer or
//! product, so those unlinks are dropped here.
//!
//! Config (the `[plugins.<name>.config]` table in plugins.toml), every key optional:
//!
//! ```toml
//! only_own_orders = true             # each salesperson receives only their own orders
//! fields = ["name", "state", "amount_total", "partner_id", "user_id"]  # trim payloads
//! ```

use serde::Deserialize;
use smartsync_sdk::prelude::*;

const ORDER: &str = "sale.order";
const CUSTOMER: &str = "res.partner";
const PRODUCT: &str = "product.template";

/// The plugin's config table. An empty table keeps the seed's behaviour: every order event,
/// customer and product creates and writes, whole payloads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Send each salesperson only their own orders (default `false`).
    ///
    /// A `sale.order` event is kept when its payload's `user_id` (the salesperson) is the pulling
    /// user, and dropped when it names another salesperson, deletions included: Odoo's "On
    /// deletion" webhook may send the order's values as they were, and another salesperson's
    /// order is not sent to this one, deleted or not.
    ///
    /// A create or write that names no salesperson (no payload, a payload that is not a JSON
    /// object, or a `user_id` that is missing, `false` or not an id) is dropped: it is not sent
    /// to everyone. Such an unlink is kept, since a device may hold the order, but without its
    /// payload, so that it carries nothing of an order that may be someone else's. Customers
    /// and products are not filtered.
    pub only_own_orders: bool,

    /// Trim every payload to these fields (default: none, the whole payload is sent).
    ///
    /// `id` is always kept. An event without a payload stays without one (as does an order's
    /// deletion that `only_own_orders` sends without it); a payload that is not a JSON object
    /// cannot be trimmed and is left out rather than sent whole.
    pub fields: Option<Vec<String>>,
}

/// The sales app's plugin.
pub struct SalesApp;

impl Plugin for SalesApp {
    fn describe() -> Manifest {
        Manifest::new("sales_app", env!("CARGO_PKG_VERSION"))
            .with_models(&[ORDER, CUSTOMER, PRODUCT])
            .with_payloads()
    }

    /// Each event is shaped on its own; of the context, only the user matters to the answer
    /// (`only_own_orders` compares an order's salesperson with the user).
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        Some(vec![ContextField::UserId])
    }

    fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        let config: Config = parse_config(&ctx)?;
        let fields = config.fields.map(|mut fields| {
            if !fields.iter().any(|f| f == "id") {
                fields.push("id".to_string());
            }
            fields
        });

        let mut shaped = Vec::with_capacity(events.len());
        for event in events {
            let is_order = event.model == ORDER;
            let filters_owner = config.only_own_orders && is_order;
            let payload = if filters_owner || fields.is_some() {
                event.payload()
            } else {
                None
            };

            let owner = if filters_owner {
                owner_scope(payload.as_ref(), ctx.user_id)
            } else {
                Owner::Caller
            };
            let wanted = match event.model.as_str() {
                ORDER => match owner {
                    Owner::Caller => true,
                    Owner::Other => false,
                    Owner::Unknown => event.kind == EventKind::Unlink,
                },
                CUSTOMER | PRODUCT => event.kind != EventKind::Unlink,
                _ => false,
            };
            if !wanted {
                continue;
            }

            let trimmed = match (&fields, payload) {
                // An unattributed deletion: nothing of the record.
                _ if owner == Owner::Unknown => Some(None),
                (None, _) => None,
                (Some(fields), Some(mut payload)) => {
                    payload.retain(fields);
                    Some(Some(payload.to_json()))
                }
                (Some(_), None) => Some(None),
            };
            shaped.push(match trimmed {
                None => ShapedEvent::keep(event),
                Some(json) => ShapedEvent::keep(event).with_payload(json),
            });
        }
        Ok(shaped)
    }
}

/// Whose order an event's payload says it is, for `only_own_orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The pulling user's.
    Caller,
    /// Another salesperson's.
    Other,
    /// The payload names no salesperson.
    Unknown,
}

/// Whose order `payload` (the event's, when it is a JSON object) says it is, for `user_id`.
fn owner_scope(payload: Option<&Payload>, user_id: i64) -> Owner {
    match payload.and_then(|p| p.id("user_id")) {
        Some(salesperson) if salesperson == user_id => Owner::Caller,
        Some(_) => Owner::Other,
        None => Owner::Unknown,
    }
}

smartsync_sdk::export_plugin!(SalesApp);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
