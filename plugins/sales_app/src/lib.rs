//! The sales app's feed: orders, customers and products.
use smartsync_sdk::prelude::*;

pub struct SalesApp;

impl Plugin for SalesApp {
    fn describe() -> Manifest {
        Manifest::new("sales_app", "0.1.0").with_models(&["sale.order", "res.partner", "product.template"])
    }

    fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        Ok(events.into_iter().map(ShapedEvent::keep).collect())
    }
}

smartsync_sdk::export_plugin!(SalesApp);
