//! WASM feed plugins: one per app_type, chosen in plugins.toml, filtering and shaping the events
//! a pull returns.
//!
//! A plugin is a WebAssembly component built against `sdk/wit/plugin.wit` (or the contract's
//! earlier version, `sdk/wit-0.1.0/`). It runs sandboxed:
//! no filesystem, network or environment, a deadline and a memory cap on every call, and its
//! output is checked before anyone sees it. A failing plugin stops its own feed with a typed
//! error and never hands out an unfiltered one.

mod answers;
mod bindings;
mod output;
mod registry;
mod runtime;
mod stats;
pub mod tools;

use serde::Serialize;

pub use answers::{AnswerCacheView, ShapedWire};
pub use registry::{
    ActivePlugin, AppFeed, OnUpgrade, PluginEntry, PluginSet, PluginsFile, Reloader,
};
pub use runtime::{LoadedPlugin, PluginEngine, PluginLimits};
pub use stats::{Counters, HealthView};

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Models read for the plugin; empty is every model.
    pub models: Vec<String>,
    pub needs_payload: bool,
    /// The context fields the plugin's answers depend on, when it lets the host reuse them
    /// (`answers-depend-on`); `None`: every pull calls the plugin.
    pub answers_depend_on: Option<Vec<ContextField>>,
    /// The version of the contract the plugin was built against (`0.2.0`, `0.1.0`).
    pub contract: Option<&'static str>,
}

/// A field of the call context (`context-field` in the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextField {
    UserId,
    DeviceId,
    CompanyIds,
    Lang,
    Tz,
}

/// Who is pulling, as handed to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub user_id: i64,
    pub device_id: String,
    pub app_type: String,
    pub company_ids: Vec<i64>,
    pub lang: Option<String>,
    pub tz: Option<String>,
}

/// One event as the plugin shaped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    /// The input event's id.
    pub id: i64,
    /// The payload the client receives.
    pub payload: ShapedPayload,
    /// The client's `data` field (a JSON object), if any.
    pub data: Option<String>,
    /// The record left the user's feed: the client receives an `unlink` with `"reason":
    /// "left_feed"`, without payload.
    pub removal: bool,
}

/// What a plugin did with an event's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapedPayload {
    /// The stored payload, unchanged.
    Keep,
    /// None.
    Drop,
    /// This JSON object instead.
    Replace(String),
}

impl ShapedPayload {
    /// The payload to send, given the event's stored one.
    pub fn resolve<'a>(&'a self, stored: Option<&'a str>) -> Option<&'a str> {
        match self {
            ShapedPayload::Keep => stored,
            ShapedPayload::Drop => None,
            ShapedPayload::Replace(json) => Some(json),
        }
    }
}

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The call ran past its deadline.
    Timeout,
    /// The plugin asked for more memory than its cap.
    OutOfMemory,
    /// The plugin crashed (panic, unreachable, stack overflow...).
    Trap,
    /// The plugin answered something the host refuses: ids it was not given, out of order or
    /// twice, payloads that are not JSON objects, answers over the size cap.
    BadOutput,
    /// The plugin reported an error itself.
    PluginError,
    /// The plugin failed too often in a row and is not called until its cool-down ends.
    Quarantined,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Trap => "trap",
            FailureKind::BadOutput => "bad_output",
            FailureKind::PluginError => "plugin_error",
            FailureKind::Quarantined => "quarantined",
        }
    }
}

/// A failed plugin call, naming the plugin (`name@version-hash`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("plugin {plugin}: {}: {message}", kind.as_str())]
pub struct PluginFailure {
    pub kind: FailureKind,
    pub plugin: String,
    pub message: String,
}
