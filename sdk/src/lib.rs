//! Write a Smart Sync feed plugin.
//!
//! A plugin decides which of an app_type's events a device receives, and in what shape. It is a
//! WebAssembly component built for `wasm32-wasip2` against the contract in `sdk/wit/plugin.wit`;
//! this crate holds the Rust side of that contract.
//!
//! Most plugins say which records a user's feed holds, and the SDK works out the rest (what to
//! send, what to leave out, and which devices must be told that a record left their feed):
//!
//! ```
//! use smartsync_sdk::prelude::*;
//!
//! struct OwnOrders;
//!
//! impl Feed for OwnOrders {
//!     type Config = NoConfig;
//!     fn describe() -> Manifest {
//!         Manifest::new("own-orders", "0.1.0").with_models(&["sale.order"]).with_payloads()
//!     }
//!     fn holds(order: &Record, ctx: &Context, _: &NoConfig) -> Holds {
//!         order.id("user_id").map(|salesperson| salesperson == ctx.user_id).into()
//!     }
//! }
//!
//! smartsync_sdk::export_feed!(OwnOrders);
//! ```
//!
//! A plugin that needs every decision in its hands implements [`Plugin`] and exports it with
//! [`export_plugin!`].
//!
//! The same code runs natively, so a plugin's logic is unit-tested with plain `cargo test`:
//! call `FeedPlugin::<OwnOrders>::shape(testing::context(5), vec![testing::event(1, "sale.order", 7, EventKind::Create)])`.

mod feed;
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

    /// Checks the plugin's config table (JSON) once at load: an error, a sentence naming the
    /// key at fault, refuses the reload and the running version stays (default: any config).
    fn check_config(config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

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
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Exported;
            impl $crate::bindings::Guest for Exported {
                fn describe() -> $crate::Manifest {
                    <$plugin as $crate::Plugin>::describe()
                }
                fn check_config(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$plugin as $crate::Plugin>::check_config(&config)
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
/// Exports a type implementing [`Feed`] as the component's functions (see
/// [`export_plugin!`]).
#[macro_export]
macro_rules! export_feed {
    ($feed:ty) => {
        $crate::export_plugin!($crate::FeedPlugin<$feed>);
    };
}

pub use bindings::smartsync::plugin::types::{
    Context, ContextField, Event, EventKind, Manifest, PayloadChange, PluginError, Prior,
    ShapedEvent,
};
pub use feed::{Feed, FeedPlugin, Holds, NoConfig, Record, decide};
pub use helpers::{Payload, parse_config};
/// Re-exported so plugins can build `data` objects without naming their own dependency.
pub use serde_json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Context, ContextField, Event, EventKind, Feed, FeedPlugin, Holds, Manifest, NoConfig,
        Payload, PayloadChange, Plugin, PluginError, Prior, Record, ShapedEvent, parse_config,
    };
    pub use serde_json::{Value, json};
}
