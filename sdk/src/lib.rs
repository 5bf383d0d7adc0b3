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
        world: "cacheable-feed-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_feed_plugin",
        default_bindings_module: "smartsync_sdk::bindings",
        additional_derives: [PartialEq, Clone],
    });
}

/// A feed plugin: the functions of the contract in `wit/plugin.wit`.
pub trait Plugin {
    /// Describes the plugin. Called once at load; must not depend on a config.
    fn describe() -> Manifest;

    /// Filters and shapes `events`, which are in log order. Returns the events the client
    /// should receive, in the same order, each input event at most once.
    fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError>;

    /// Whether the host may reuse this plugin's answers between pulls, and between whom
    /// (default: never).
    ///
    /// Return `Some(fields)` only when what [`shape`](Plugin::shape) answers for each event
    /// (dropped, or its payload change and data) depends on nothing but that event, the
    /// config, the app_type and these context fields: not on the other events of the call, the
    /// clock, randomness or state kept between calls, whatever the config. The host then reuses
    /// the answer for all pulls whose contexts agree on these fields (and on the user, when
    /// `DeviceId` is listed). A plugin that filters by the user's
    /// companies returns `Some(vec![ContextField::CompanyIds])`; one that reads nothing of the
    /// context returns `Some(vec![])`.
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        None
    }
}

/// Exports a type implementing [`Plugin`] as the component's functions.
///
/// It expands only when building for WebAssembly, so natively several plugins can be linked into
/// one test or benchmark binary.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Exported;
            impl $crate::bindings::Guest for Exported {
                fn describe() -> $crate::Manifest {
                    <$plugin as $crate::Plugin>::describe()
                }
                fn shape(
                    ctx: $crate::Context,
                    events: ::std::vec::Vec<$crate::Event>,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::ShapedEvent>, $crate::PluginError>
                {
                    <$plugin as $crate::Plugin>::shape(ctx, events)
                }
                fn answers_depend_on() -> ::std::option::Option<::std::vec::Vec<$crate::ContextField>> {
                    <$plugin as $crate::Plugin>::answers_depend_on()
                }
            }
            $crate::bindings::__export_feed_plugin!(Exported);
        };
    };
}
pub use bindings::smartsync::plugin::types::{
    Context, ContextField, Event, EventKind, Manifest, PayloadChange, PluginError, ShapedEvent,
};
pub use helpers::{Payload, parse_config};
/// Re-exported so plugins can build `data` objects without naming their own dependency.
pub use serde_json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Context, ContextField, Event, EventKind, Manifest, Payload, PayloadChange, Plugin,
        PluginError, ShapedEvent, parse_config,
    };
    pub use serde_json::{Value, json};
}
