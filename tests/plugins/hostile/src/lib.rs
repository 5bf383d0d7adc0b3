//! A feed plugin that misbehaves on request, for the host's failure tests.
//!
//! Its config chooses one misbehaviour for every `shape` call:
//!
//! ```toml
//! [plugins.hostile.config]
//! mode = "loop"
//! ```
//!
//! The manifest asks for every model, with payloads. Only a test should ever load this plugin.

use std::hint::black_box;
use std::io::Write;

use serde::Deserialize;
use smartsync_sdk::prelude::*;

/// The plugin's config table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What `shape` does (default `"pass"`).
    pub mode: Mode,
}

/// The behaviours `shape` can be asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keeps every event as it is: a well-behaved plugin.
    #[default]
    Pass,
    /// Never returns: spins forever (the host's deadline must stop it).
    Loop,
    /// Allocates and fills 1 MiB chunks forever (the host's memory cap must stop it).
    Memory,
    /// Recurses without bound until the engine's call stack overflows (a trap).
    Recursion,
    /// Panics with "hostile plugin panics" (a trap).
    Panic,
    /// Returns an event whose id was not in the input: the largest input id + 1000.
    ForgedIds,
    /// Returns the input events in reverse order (out of order once there are two or more).
    Reordered,
    /// Returns the first input event twice.
    DuplicateIds,
    /// Returns every event with a payload of about 2 MiB: `{"blob": "xxx…"}`.
    HugeOutput,
    /// Returns every event with the payload `{not json`.
    BadJson,
    /// Returns every event with the data `[1,2,3]`, which is JSON but not an object.
    DataNotObject,
    /// Prints 100,000 lines to stdout, then keeps every event as it is.
    StdoutFlood,
    /// Fails with `PluginError::Failed("hostile plugin refuses")`.
    Error,
    /// Tries to read a file, the environment and the network, and keeps every event with
    /// `data = {"file": bool, "env_vars": n, "network": bool}` saying what it reached.
    Escape,
}

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> Manifest {
        Manifest::new("hostile", env!("CARGO_PKG_VERSION")).with_payloads()
    }

    fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        let config: Config = parse_config(&ctx)?;
        let keep_all =
            |events: Vec<Event>| events.into_iter().map(|e| ShapedEvent::keep(&e)).collect();
        Ok(match config.mode {
            Mode::Pass => keep_all(events),
            Mode::Loop => spin(),
            Mode::Memory => hoard(),
            Mode::Recursion => {
                let depth = recurse(0, black_box(u64::MAX));
                // Unreachable in practice; it keeps the recursion's result alive.
                return Err(PluginError::Failed(format!("recursion ended at {depth}")));
            }
            Mode::Panic => panic!("hostile plugin panics"),
            Mode::ForgedIds => {
                let forged = events
                    .iter()
                    .map(|e| e.id)
                    .max()
                    .unwrap_or(0)
                    .wrapping_add(1000);
                vec![ShapedEvent {
                    id: forged,
                    payload: PayloadChange::Drop,
                    data: None,
                    removal: false,
                }]
            }
            Mode::Reordered => events
                .into_iter()
                .rev()
                .map(|e| ShapedEvent::keep(&e))
                .collect(),
            Mode::DuplicateIds => match events.into_iter().next() {
                Some(first) => vec![ShapedEvent::keep(&first), ShapedEvent::keep(&first)],
                None => Vec::new(),
            },
            Mode::HugeOutput => {
                let payload = json!({"blob": "x".repeat(2 * 1024 * 1024)}).to_string();
                events
                    .into_iter()
                    .map(|e| ShapedEvent {
                        id: e.id,
                        payload: PayloadChange::Replace(payload.clone()),
                        data: None,
                        removal: false,
                    })
                    .collect()
            }
            Mode::BadJson => events
                .into_iter()
                .map(|e| ShapedEvent {
                    id: e.id,
                    payload: PayloadChange::Replace("{not json".into()),
                    data: None,
                    removal: false,
                })
                .collect(),
            Mode::DataNotObject => events
                .into_iter()
                .map(|e| ShapedEvent {
                    data: Some("[1,2,3]".into()),
                    ..ShapedEvent::keep(&e)
                })
                .collect(),
            Mode::StdoutFlood => {
                flood_stdout();
                keep_all(events)
            }
            Mode::Error => return Err(PluginError::Failed("hostile plugin refuses".into())),
            Mode::Escape => {
                let reached = json!({
                    "file": std::fs::read("/etc/hostname").is_ok()
                        || std::fs::read_dir("/").is_ok(),
                    "env_vars": std::env::vars().count(),
                    "network": std::net::TcpStream::connect("127.0.0.1:1").is_ok()
                        || std::net::UdpSocket::bind("0.0.0.0:0").is_ok(),
                });
                events
                    .into_iter()
                    .map(|e| ShapedEvent::keep(&e).with_data(reached.clone()))
                    .collect()
            }
        })
    }
}

/// Spins forever; `black_box` keeps the optimizer from proving the loop useless.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB chunks filled with data, and keeps them, forever.
fn hoard() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let fill = black_box(0xA5u8).wrapping_add(chunks.len() as u8);
        chunks.push(vec![fill; 1024 * 1024]);
        black_box(&mut chunks);
    }
}

/// Recurses until wasm's call stack runs out (a stack-overflow trap). Each call's result is
/// used after it returns and mixed in a way no accumulator rewrite covers, and `stop` is opaque,
/// so the compiler can turn the recursion neither into a loop nor into nothing. The frame keeps
/// nothing in linear memory, so it is the engine's call stack that overflows, not Rust's shadow
/// stack (which would show as an out-of-bounds memory access instead).
#[inline(never)]
fn recurse(depth: u64, stop: u64) -> u64 {
    if depth == stop {
        return depth;
    }
    recurse(depth + 1, stop).rotate_left(7) ^ depth.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Prints 100,000 lines. Write errors are ignored: a host that discards or closes stdout must
/// still see the events come back.
fn flood_stdout() {
    let mut out = std::io::stdout().lock();
    for line in 0..100_000 {
        let _ = writeln!(out, "hostile plugin line {line} of 100000: flooding stdout");
    }
    let _ = out.flush();
}

smartsync_sdk::export_plugin!(Hostile);

// A failed unwrap in a test is a failed test.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
