//! What the benches share: their settings from the environment, and the bundled plugins.

// Each bench uses part of this module.
#![allow(dead_code)]

use std::path::PathBuf;

/// A numeric setting from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bundled plugin built for wasm32-wasip2 (`scripts/build-plugins` builds them).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins",
        path.display()
    );
    path
}

/// The plugins.toml entry that enables bundled plugin `name` for `app_type`.
pub fn plugin_entry(app_type: &str, name: &str) -> String {
    format!(
        "[plugins.{name}]\napp_type = \"{app_type}\"\nwasm = {:?}\n\n",
        plugin_wasm(name).display().to_string()
    )
}
