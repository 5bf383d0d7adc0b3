//! Write a Smart Sync feed plugin.
//!
//! A plugin decides which of an app_type's events a device receives, and in what shape. It is a
//! WebAssembly component built for `wasm32-wasip2` against the contract in `sdk/wit/plugin.wit`;
//! this crate holds the Rust side of that contract. Implement [`Plugin`] and export it:
//!
//! ```
//! use smartsync_sdk::prelude::*;
//!
//! struct OnlyOrders;
//!
//! impl Plugin for OnlyOrders {
//!     fn describe() -> Manifest {
//!         Manifest::new("only-orders", "0.1.0").with_models(&["sale.order"])
//!     }
//!
//!     fn shape(_ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
//!         Ok(events.into_iter().filter(|e| e.kind != EventKind::Unlink).map(ShapedEvent::keep).collect())
//!     }
//! }
//!
//! smartsync_sdk::export_plugin!(OnlyOrders);
//! ```
//!
//! The same code runs natively, so a plugin's logic is unit-tested with plain `cargo test`:
//! call `OnlyOrders::shape(testing::context(5), vec![testing::event(1, "sale.order", 7, EventKind::Create)])`.

mod helpers;
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "feed-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_feed_plugin",
        default_bindings_module: "smartsync_sdk::bindings",
        additional_derives: [PartialEq, Clone],
    });
}

pub use bindings::Guest as Plugin;

/// Exports a type implementing [`Plugin`] as the component's `describe` and `shape`.
///
/// It expands only when building for WebAssembly, so natively several plugins can be linked into
/// one test or benchmark binary.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_feed_plugin!($plugin);
    };
}
pub use bindings::smartsync::plugin::types::{
    Context, Event, EventKind, Manifest, PayloadChange, PluginError, ShapedEvent,
};
pub use helpers::{Payload, parse_config};
/// Re-exported so plugins can build `data` objects without naming their own dependency.
pub use serde_json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Context, Event, EventKind, Manifest, Payload, PayloadChange, Plugin, PluginError,
        ShapedEvent, parse_config,
    };
    pub use serde_json::{Value, json};
}
