//! The sales app's feed (`app_type = "sales_app"`): orders, customers and products.
//!
//! The seed's Flutter sales app handles `sale.order` create, write and unlink, and `res.partner`
//! and `product.template` create and write; it ignores the deletions of customers and products,
//! which are sent all the same, so that clients that keep them can delete their copy.
//!
//! Config (the `[plugins.<name>.config]` table in plugins.toml), every key optional:
//!
//! ```toml
//! only_own_orders = true             # each salesperson receives only their own orders
//! fields = ["name", "state", "amount_total", "partner_id", "user_id"]  # trim payloads
//! ```
//!
//! With `only_own_orders`, an order reassigned to another salesperson leaves the first one's
//! feed: their devices receive it as an `unlink` with `"reason": "left_feed"`.

use serde::Deserialize;
use smartsync_sdk::prelude::*;

const ORDER: &str = "sale.order";
const CUSTOMER: &str = "res.partner";
const PRODUCT: &str = "product.template";

/// The plugin's config table. An empty table keeps the seed's behaviour: every order, customer
/// and product event, whole payloads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Send each salesperson only their own orders (default `false`).
    ///
    /// A salesperson's feed holds the orders whose `user_id` (the salesperson) is theirs.
    /// An order event whose payload names another salesperson is not sent, deletions
    /// included, and an order reassigned away from the user is removed from their devices. A
    /// create or write that names no salesperson (no payload, a payload that is not a JSON
    /// object, or a `user_id` that is missing, `false` or not an id) is not sent: it would go
    /// to everyone. Such an unlink is sent, since a device may hold the order, but without its
    /// payload. Customers and products are not filtered.
    pub only_own_orders: bool,

    /// Trim every payload to these fields (default: none, the whole payload is sent).
    ///
    /// `id` is always kept. An event without a payload stays without one; a payload that is
    /// not a JSON object cannot be trimmed and is left out rather than sent whole.
    pub fields: Option<Vec<String>>,
}

/// The sales app's plugin.
pub struct SalesApp;

impl Feed for SalesApp {
    type Config = Config;

    fn describe() -> Manifest {
        Manifest::new("sales_app", env!("CARGO_PKG_VERSION"))
            .with_models(&[ORDER, CUSTOMER, PRODUCT])
            .with_payloads()
    }

    /// Of the context, only the user matters to the answer (`only_own_orders` compares an
    /// order's salesperson with the user).
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        Some(vec![ContextField::UserId])
    }

    fn holds(record: &Record<'_>, ctx: &Context, config: &Config) -> Holds {
        match record.model {
            ORDER if config.only_own_orders => record
                .id("user_id")
                .map(|salesperson| salesperson == ctx.user_id)
                .into(),
            ORDER | CUSTOMER | PRODUCT => Holds::Yes,
            _ => Holds::No,
        }
    }

    fn shape(event: &Event, _ctx: &Context, config: &Config) -> ShapedEvent {
        let shaped = ShapedEvent::keep(event);
        let Some(fields) = &config.fields else {
            return shaped;
        };
        match event.payload() {
            Some(mut payload) => {
                let mut keep = fields.clone();
                if !keep.iter().any(|f| f == "id") {
                    keep.push("id".to_string());
                }
                payload.retain(&keep);
                shaped.with_payload(Some(payload.to_json()))
            }
            // No payload, or one that is not an object and cannot be trimmed: none.
            None => shaped.with_payload(None),
        }
    }
}

smartsync_sdk::export_feed!(SalesApp);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
