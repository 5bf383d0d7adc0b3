//! What the benches share: their settings from the environment, the bundled plugins, the
//! server's secrets and how requests are built.

// Each bench uses part of this module.
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

/// The ingest token and token secret the benches configure their servers with.
pub const INGEST_TOKEN: &str = "bench-ingest-token-0123456789";
pub const TOKEN_SECRET: &str = "bench-token-secret-0123456789";

/// A JSON POST to `path` on the server under test, with extra `headers`.
pub fn post_json(path: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
    let mut request = Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(body)).expect("request")
}

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
