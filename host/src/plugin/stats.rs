//! What the admin status shows of a plugin: counters, latencies, and whether it is quarantined.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::{FailureKind, PluginFailure};

/// Latencies kept for percentiles.
const LATENCY_WINDOW: usize = 1024;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub calls: u64,
    pub events_in: u64,
    pub events_out: u64,
    pub errors: ErrorCounts,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts {
    pub timeout: u64,
    pub out_of_memory: u64,
    pub trap: u64,
    pub bad_output: u64,
    pub plugin_error: u64,
}

#[derive(Default)]
struct Inner {
    counters: Counters,
    latencies: VecDeque<u64>,
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    last_error: Option<PluginFailure>,
}

/// Counters and the failure state of one loaded plugin.
#[derive(Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

/// A snapshot for the admin status.
#[derive(Debug, Clone)]
pub struct HealthView {
    pub counters: Counters,
    pub quarantined: bool,
    pub last_error: Option<PluginFailure>,
}

impl Health {
    /// The failure to answer at once while quarantined; after the cool-down one call is let
    /// through to try the plugin again.
    pub fn check(&self) -> Result<(), PluginFailure> {
        let mut inner = self.inner.lock();
        match inner.quarantined_until {
            Some(until) if Instant::now() < until => {
                let last = inner.last_error.clone();
                Err(PluginFailure {
                    kind: FailureKind::Quarantined,
                    plugin: last.as_ref().map(|e| e.plugin.clone()).unwrap_or_default(),
                    message: match last {
                        Some(e) => format!("quarantined after repeated failures; last: {e}"),
                        None => "quarantined after repeated failures".into(),
                    },
                })
            }
            Some(_) => {
                // Half-open: this call decides. A failure quarantines again at once.
                inner.quarantined_until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn success(&self, events_in: usize, events_out: usize, took: Duration) {
        let mut inner = self.inner.lock();
        inner.consecutive_failures = 0;
        inner.counters.calls += 1;
        inner.counters.events_in += events_in as u64;
        inner.counters.events_out += events_out as u64;
        if inner.latencies.len() == LATENCY_WINDOW {
            inner.latencies.pop_front();
        }
        inner.latencies.push_back(took.as_micros() as u64);
    }

    /// Counts a failure; quarantines the plugin after `threshold` in a row.
    pub fn failure(&self, failure: &PluginFailure, threshold: u32, cool_down: Duration) -> bool {
        let mut inner = self.inner.lock();
        inner.counters.calls += 1;
        let errors = &mut inner.counters.errors;
        match failure.kind {
            FailureKind::Timeout => errors.timeout += 1,
            FailureKind::OutOfMemory => errors.out_of_memory += 1,
            FailureKind::Trap => errors.trap += 1,
            FailureKind::BadOutput => errors.bad_output += 1,
            FailureKind::PluginError | FailureKind::Quarantined => errors.plugin_error += 1,
        }
        inner.consecutive_failures += 1;
        inner.last_error = Some(failure.clone());
        let quarantine = inner.consecutive_failures >= threshold.max(1);
        if quarantine {
            inner.quarantined_until = Some(Instant::now() + cool_down);
        }
        quarantine
    }

    pub fn view(&self) -> HealthView {
        let inner = self.inner.lock();
        let mut counters = inner.counters.clone();
        let mut sorted: Vec<u64> = inner.latencies.iter().copied().collect();
        sorted.sort_unstable();
        let pick = |q: f64| {
            if sorted.is_empty() {
                0
            } else {
                sorted[((sorted.len() - 1) as f64 * q).round() as usize]
            }
        };
        counters.p50_us = pick(0.50);
        counters.p99_us = pick(0.99);
        HealthView {
            counters,
            quarantined: inner
                .quarantined_until
                .is_some_and(|until| Instant::now() < until),
            last_error: inner.last_error.clone(),
        }
    }
}
