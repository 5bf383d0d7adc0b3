//! The sandbox: one shared wasmtime `Engine`, plugins compiled once (and cached on disk), and
//! every call bounded in time, memory and output.
//!
//! Calls run on tokio's blocking pool through wasmtime's synchronous API, so a plugin never
//! holds up a worker thread. Each plugin keeps a small pool of instances; an instance that
//! trapped is discarded, never reused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::{Component, Instance, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::answers::{Answer, AnswerCache, AnswerCacheView, ShapedWire};
use super::bindings::{ANSWERS_DEPEND_ON, AnswersDependOn, Bound, Pre, ShapeAnswer};
use super::output::{LogForwarder, OutputSink};
use super::stats::Health;
use super::{
    CallContext, ContextField, FailureKind, Manifest, PluginFailure, Shaped, ShapedPayload,
};
use crate::event::LoggedEvent;

/// How often the engine's epoch advances: the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Bounds on every call of one plugin (`[plugins.<name>.limits]` in plugins.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock time one call may take, in milliseconds.
    pub time_ms: u64,
    /// Linear memory one instance may use, in MiB.
    pub memory_mb: u64,
    /// Bytes of payloads and data one call may return, in KiB.
    pub max_output_kb: u64,
    /// Calls of this plugin running at once (each on its own instance).
    pub max_instances: usize,
    /// Failed calls in a row that quarantine the plugin.
    pub quarantine_after: u32,
    /// How long a quarantine lasts, in seconds.
    pub quarantine_secs: u64,
    /// Memory for answers kept for reuse, in MiB, when the plugin allows reuse
    /// (`answers-depend-on`); 0: never reuse.
    pub answer_cache_mb: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            time_ms: 200,
            memory_mb: 64,
            max_output_kb: 8 * 1024,
            max_instances: 4,
            quarantine_after: 5,
            quarantine_secs: 30,
            answer_cache_mb: 16,
        }
    }
}

/// The wasmtime engine all plugins share, and the epoch ticker behind their deadlines.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine whose compiled plugins are cached in `cache_dir` (when given), keyed by the
    /// plugin's bytes, wasmtime's version and the engine's settings.
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<Arc<PluginEngine>> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(1024 * 1024);
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)?;
            let mut cache = wasmtime::CacheConfig::new();
            // wasmtime wants an absolute path.
            cache.with_directory(std::path::absolute(dir)?);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            ticker_stop,
        }))
    }

    /// Compiles `wasm` (or loads it from the cache), checks it is a feed plugin, and asks it
    /// to describe itself.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        config_json: String,
        limits: PluginLimits,
    ) -> anyhow::Result<LoadedPlugin> {
        let hash = Sha256::digest(wasm);
        let version_hash: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut epoch_bytes = [0u8; 8];
        epoch_bytes.copy_from_slice(&hash[..8]);
        let component = Component::new(&self.engine, wasm).map_err(|e| {
            anyhow::anyhow!("not a WebAssembly component wasmtime can compile: {e:#}")
        })?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!("imports something the sandbox does not provide: {e:#}")
        })?;
        let pre = Pre::new(pre)?;
        let label = format!("{name}@{version_hash}");
        let mut plugin = LoadedPlugin {
            engine: self.clone(),
            label: label.clone(),
            name: name.to_string(),
            version_hash,
            epoch: u64::from_be_bytes(epoch_bytes).max(1),
            manifest: Manifest {
                name: String::new(),
                version: String::new(),
                models: Vec::new(),
                needs_payload: false,
                answers_depend_on: None,
                contract: None,
            },
            config_json,
            slots: Semaphore::new(limits.max_instances.max(1)),
            limits,
            pre,
            pool: Mutex::new(Vec::new()),
            health: Health::default(),
            log: LogForwarder::new(label),
            answers: None,
        };
        let mut guest = plugin
            .instantiate()
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        plugin.arm(&mut guest);
        let manifest = guest.plugin.describe(&mut guest.store).map_err(|e| {
            anyhow::anyhow!("describe() failed: {}", plugin.classify(&guest, &e).message)
        })?;
        let depends_on = plugin.answers_depend_on(&mut guest);
        plugin.arm(&mut guest);
        let verdict = guest
            .plugin
            .check_config(&mut guest.store, &plugin.config_json)
            .map_err(|e| {
                anyhow::anyhow!(
                    "check-config() failed: {}",
                    plugin.classify(&guest, &e).message
                )
            });
        let _ = plugin.forward_output(&guest);
        if let Err(refused) = verdict? {
            anyhow::bail!("refuses its config: {refused}");
        }
        plugin.manifest = manifest;
        plugin.manifest.answers_depend_on = depends_on?;
        plugin.manifest.contract = Some(plugin.pre.contract().as_str());
        let cache_bytes =
            usize::try_from(plugin.limits.answer_cache_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX);
        plugin.answers = plugin
            .manifest
            .answers_depend_on
            .clone()
            .filter(|_| cache_bytes > 0)
            .map(|fields| AnswerCache::new(fields, cache_bytes));
        if let Some(bad) = plugin
            .manifest
            .models
            .iter()
            .find(|m| !crate::ingest::valid_model(m))
        {
            anyhow::bail!("describe() names {bad:?}, which is not an Odoo model name");
        }
        plugin.pool.lock().push(guest);
        Ok(plugin)
    }
}

/// What a store carries: WASI with nothing granted, the memory cap, the output sinks.
struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    stdout: OutputSink,
    stderr: OutputSink,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses memory growth past the cap, and remembers that it did.
struct MemoryCap {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        if !allowed {
            self.denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

struct Guest {
    store: Store<GuestState>,
    instance: Instance,
    plugin: Bound,
}

/// A compiled, described plugin, ready to be called.
pub struct LoadedPlugin {
    engine: Arc<PluginEngine>,
    /// `name@version-hash`, as errors and logs name the plugin.
    pub label: String,
    pub name: String,
    /// The first 8 bytes of the SHA-256 of the `.wasm`, in hex.
    pub version_hash: String,
    /// The same as a number, carried in sync tokens (never 0, which means "no plugin").
    pub epoch: u64,
    pub manifest: Manifest,
    pub config_json: String,
    pub limits: PluginLimits,
    pre: Pre<GuestState>,
    pool: Mutex<Vec<Guest>>,
    slots: Semaphore,
    pub health: Health,
    log: LogForwarder,
    /// Answers kept for reuse, when the plugin allows it and the limits give them memory.
    answers: Option<AnswerCache>,
}

impl LoadedPlugin {
    fn failure(&self, kind: FailureKind, message: impl Into<String>) -> PluginFailure {
        PluginFailure {
            kind,
            plugin: self.label.clone(),
            message: message.into(),
        }
    }

    fn instantiate(&self) -> Result<Guest, PluginFailure> {
        let stdout = OutputSink::new();
        let stderr = OutputSink::new();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryCap {
                max_bytes: usize::try_from(self.limits.memory_mb.saturating_mul(1024 * 1024))
                    .unwrap_or(usize::MAX),
                denied: false,
            },
            stdout,
            stderr,
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.deadline_ticks());
        let failed = |e: wasmtime::Error| {
            self.failure(FailureKind::Trap, format!("instantiation failed: {e:#}"))
        };
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(failed)?;
        let plugin = self.pre.bind(&mut store, &instance).map_err(failed)?;
        Ok(Guest {
            store,
            instance,
            plugin,
        })
    }

    /// Asks the plugin whether its answers may be reused (`answers-depend-on`, optional: a
    /// component built for the plain `feed-plugin` world does not export it).
    fn answers_depend_on(&self, guest: &mut Guest) -> anyhow::Result<Option<Vec<ContextField>>> {
        let Some(func) = guest.instance.get_func(&mut guest.store, ANSWERS_DEPEND_ON) else {
            return Ok(None);
        };
        let func: AnswersDependOn = func.typed(&guest.store).map_err(|e| {
            anyhow::anyhow!(
                "exports `{ANSWERS_DEPEND_ON}` with another type than the contract's: {e:#}"
            )
        })?;
        self.arm(guest);
        let (fields,) = func.call(&mut guest.store, ()).map_err(|e| {
            anyhow::anyhow!(
                "{ANSWERS_DEPEND_ON}() failed: {}",
                self.classify(guest, &e).message
            )
        })?;
        Ok(fields.map(|fields| {
            let mut fields: Vec<ContextField> = fields.into_iter().map(Into::into).collect();
            fields.sort_unstable();
            fields.dedup();
            fields
        }))
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.time_ms.max(1) * 1000).div_ceil(EPOCH_TICK.as_micros() as u64)
    }

    /// Prepares an instance for a call: a fresh deadline, the memory flag cleared.
    fn arm(&self, guest: &mut Guest) {
        guest.store.set_epoch_deadline(self.deadline_ticks());
        guest.store.data_mut().limiter.denied = false;
    }

    fn classify(&self, guest: &Guest, error: &wasmtime::Error) -> PluginFailure {
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return self.failure(
                FailureKind::Timeout,
                format!("ran past its {} ms deadline", self.limits.time_ms),
            );
        }
        if guest.store.data().limiter.denied {
            return self.failure(
                FailureKind::OutOfMemory,
                format!(
                    "needed more than its {} MiB memory cap",
                    self.limits.memory_mb
                ),
            );
        }
        let message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        self.failure(
            FailureKind::Trap,
            message.lines().next().unwrap_or("trap").to_string(),
        )
    }

    /// Sends the call's output to the log; answers the last line of stderr (a panic's message).
    fn forward_output(&self, guest: &Guest) -> Option<String> {
        let state = guest.store.data();
        self.log.forward("stdout", state.stdout.take());
        let (stderr, dropped) = state.stderr.take();
        let last_line = String::from_utf8_lossy(&stderr)
            .lines()
            .rev()
            // A panic prints its message, then a `note:` about backtraces.
            .find(|l| !l.trim().is_empty() && !l.starts_with("note:"))
            .map(|l| l.trim().chars().take(300).collect::<String>());
        self.log.forward("stderr", (stderr, dropped));
        last_line
    }

    fn call_blocking(
        &self,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<Vec<Shaped>, PluginFailure> {
        let pooled = self.pool.lock().pop();
        let mut guest = match pooled {
            Some(guest) => guest,
            None => self.instantiate()?,
        };
        self.arm(&mut guest);
        let result: wasmtime::Result<ShapeAnswer> = guest.plugin.shape(
            &mut guest.store,
            ctx,
            &self.config_json,
            events,
            self.manifest.needs_payload,
        );
        let stderr = self.forward_output(&guest);
        match result {
            Ok(answer) => {
                let mut pool = self.pool.lock();
                if pool.len() < self.limits.max_instances.max(1) {
                    pool.push(guest);
                }
                drop(pool);
                answer.map_err(|e| self.failure(FailureKind::PluginError, e))
            }
            // A trapped instance is in an unknown state: it is dropped here, never reused.
            Err(e) => {
                let mut failure = self.classify(&guest, &e);
                if let Some(line) = stderr.filter(|_| failure.kind == FailureKind::Trap) {
                    failure.message = format!("{}; stderr: {line}", failure.message);
                }
                Err(failure)
            }
        }
    }

    /// The events of `events` the device in `ctx` receives, each with its source, shaped and
    /// rendered. Answers kept from earlier calls are reused where the plugin allows it; the
    /// plugin is called for the others only.
    pub async fn answer(
        self: &Arc<Self>,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<Vec<(Arc<LoggedEvent>, Arc<ShapedWire>)>, PluginFailure> {
        let Some(cache) = &self.answers else {
            let shaped = self.shape(ctx, events).await?;
            return self.pair_up(events, shaped).collect();
        };
        let scope = cache.scope(ctx);
        let mut known = cache.get(&scope, events);
        let mut shaped_now = 0;
        if known.iter().any(Option::is_none) {
            // Wait for an instance, then look again: when one commit wakes many pulls of the
            // same scope, the call that held the instance may have just answered for them.
            let permit = self.acquire().await?;
            known = cache.get(&scope, events);
            let missing: Vec<Arc<LoggedEvent>> = events
                .iter()
                .zip(&known)
                .filter(|(_, answer)| answer.is_none())
                .map(|(event, _)| event.clone())
                .collect();
            if !missing.is_empty() {
                // The answer was checked: its ids come from `missing`, in order.
                let mut shaped = self
                    .shape_holding(ctx, &missing)
                    .await?
                    .into_iter()
                    .peekable();
                let mut fresh = Vec::with_capacity(missing.len());
                for (slot, event) in known.iter_mut().zip(events) {
                    if slot.is_some() {
                        continue;
                    }
                    let id = event.event.id;
                    let answer = match shaped.next_if(|out| out.id == id) {
                        Some(out) => Answer::Sent(Arc::new(ShapedWire::new(event, out))),
                        None => Answer::Dropped,
                    };
                    *slot = Some(answer.clone());
                    fresh.push(((id, event.event.rev), answer));
                }
                // An id left over had no source: a bug of the host, which fails the call
                // rather than being taken for a dropped event.
                if let Some(out) = shaped.next() {
                    return Err(unmatched(self, out.id));
                }
                shaped_now = fresh.len();
                cache.put(&scope, fresh);
            }
            // Only now: a pull waiting for the instance finds these answers.
            drop(permit);
        }
        cache.count_reused(events.len() - shaped_now);
        Ok(sent(events, known))
    }

    /// Pairs each shaped event with its source in `events`. The answer was checked (its ids
    /// come from `events`, in order), so an id without a source is a bug of the host; it fails
    /// the call rather than being taken for a dropped event.
    fn pair_up<'a>(
        &'a self,
        events: &'a [Arc<LoggedEvent>],
        shaped: Vec<Shaped>,
    ) -> impl Iterator<Item = Result<(Arc<LoggedEvent>, Arc<ShapedWire>), PluginFailure>> + 'a {
        let mut sources = events.iter();
        shaped.into_iter().map(move |out| {
            let source = sources
                .find(|e| e.event.id == out.id)
                .ok_or_else(|| unmatched(self, out.id))?;
            let wire = ShapedWire::new(source, out);
            Ok((source.clone(), Arc::new(wire)))
        })
    }

    /// How the plugin's answer cache is doing; `None` when answers are not reused.
    pub fn answer_cache(&self) -> Option<AnswerCacheView> {
        self.answers.as_ref().map(AnswerCache::view)
    }

    /// Shapes `events` for `ctx`: the plugin's answer, checked. Counts the call, and
    /// quarantines the plugin after too many failures in a row.
    pub async fn shape(
        self: &Arc<Self>,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<Vec<Shaped>, PluginFailure> {
        let _permit = self.acquire().await?;
        self.shape_holding(ctx, events).await
    }

    /// Fails when the plugin is quarantined.
    fn check_health(&self) -> Result<(), PluginFailure> {
        self.health.check().map_err(|mut e| {
            e.plugin = self.label.clone();
            e
        })
    }

    /// Waits for one of the plugin's instances to be free.
    /// A quarantined plugin fails at once, without waiting.
    async fn acquire(&self) -> Result<SemaphorePermit<'_>, PluginFailure> {
        self.check_health()?;
        self.slots
            .acquire()
            .await
            .map_err(|_| self.failure(FailureKind::Trap, "the plugin was unloaded"))
    }

    /// [`LoadedPlugin::shape`], for a caller holding a permit from [`LoadedPlugin::acquire`].
    async fn shape_holding(
        self: &Arc<Self>,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<Vec<Shaped>, PluginFailure> {
        // Again: the plugin may have been quarantined while this caller waited.
        self.check_health()?;
        let result = self.shape_checked(ctx, events).await;
        match &result {
            Ok((shaped, took)) => self.health.success(events.len(), shaped.len(), *took),
            Err(failure) => {
                let quarantined = self.health.failure(
                    failure,
                    self.limits.quarantine_after,
                    Duration::from_secs(self.limits.quarantine_secs),
                );
                tracing::warn!(plugin = %self.label, kind = failure.kind.as_str(), quarantined, "plugin call failed: {}", failure.message);
            }
        }
        result.map(|(shaped, _)| shaped)
    }

    async fn shape_checked(
        self: &Arc<Self>,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<(Vec<Shaped>, Duration), PluginFailure> {
        let (this, ctx, events) = (self.clone(), ctx.clone(), events.to_vec());
        let started = Instant::now();
        let shaped = tokio::task::spawn_blocking(move || this.shape_blocking(&ctx, &events))
            .await
            .map_err(|e| {
                self.failure(
                    FailureKind::Trap,
                    format!("the call panicked the host thread: {e}"),
                )
            })??;
        Ok((shaped, started.elapsed()))
    }

    /// One call, on this thread, its answer checked; no counters, no quarantine. It blocks for up
    /// to the plugin's deadline: call it off the async runtime (the server does, through
    /// [`LoadedPlugin::shape`]).
    pub fn shape_blocking(
        &self,
        ctx: &CallContext,
        events: &[Arc<LoggedEvent>],
    ) -> Result<Vec<Shaped>, PluginFailure> {
        let shaped = self.call_blocking(ctx, events)?;
        self.check_output(events, &shaped)?;
        Ok(shaped)
    }

    /// Every id from the input, in input order, at most once; payloads and data JSON objects;
    /// the whole within the output cap.
    fn check_output(
        &self,
        events: &[Arc<LoggedEvent>],
        shaped: &[Shaped],
    ) -> Result<(), PluginFailure> {
        let bad = |message: String| Err(self.failure(FailureKind::BadOutput, message));
        let max_bytes =
            usize::try_from(self.limits.max_output_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        let mut bytes = 0usize;
        let mut next_input = 0usize;
        for out in shaped {
            match events[next_input..]
                .iter()
                .position(|e| e.event.id == out.id)
            {
                Some(offset) => next_input += offset + 1,
                None if events.iter().any(|e| e.event.id == out.id) => {
                    return bad(format!("event {} is out of order or repeated", out.id));
                }
                None => return bad(format!("event {} was not in the input", out.id)),
            }
            let replaced = match &out.payload {
                // A removal is sent without payload, whatever the plugin put there.
                _ if out.removal => None,
                ShapedPayload::Replace(json) => Some(json),
                ShapedPayload::Keep | ShapedPayload::Drop => None,
            };
            for (what, text) in [("payload", replaced), ("data", out.data.as_ref())] {
                if let Some(text) = text {
                    bytes += text.len();
                    if bytes > max_bytes {
                        return bad(format!(
                            "the answer is over the {} KiB output cap",
                            self.limits.max_output_kb
                        ));
                    }
                    match serde_json::from_str::<serde_json::Value>(text) {
                        Ok(serde_json::Value::Object(_)) => {}
                        Ok(_) => {
                            return bad(format!("event {}: {what} is not a JSON object", out.id));
                        }
                        Err(e) => return bad(format!("event {}: {what} is not JSON: {e}", out.id)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The failure for a shaped event whose id is not among its input's: the answer was checked,
/// so this is a bug of the host.
fn unmatched(plugin: &LoadedPlugin, id: i64) -> PluginFailure {
    plugin.failure(
        FailureKind::BadOutput,
        format!("shaped event {id} is missing from its input"),
    )
}

/// The events of `events` whose answer is to send them, with how.
fn sent(
    events: &[Arc<LoggedEvent>],
    answers: Vec<Option<Answer>>,
) -> Vec<(Arc<LoggedEvent>, Arc<ShapedWire>)> {
    events
        .iter()
        .zip(answers)
        .filter_map(|(event, answer)| match answer {
            Some(Answer::Sent(shaped)) => Some((event.clone(), shaped)),
            Some(Answer::Dropped) | None => None,
        })
        .collect()
}
