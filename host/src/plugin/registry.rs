//! `plugins.toml`: which plugin shapes each app_type's feed, loaded at start and swapped in
//! atomically whenever the file or a `.wasm` changes (or on SIGHUP, or the admin API's reload).
//!
//! A reload builds a whole new set beside the running one; only if every enabled plugin loads
//! does the new set replace the old. Pulls in flight finish on the set they started with. A
//! failed reload changes nothing that runs: the error goes to the log and the admin status.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::runtime::{LoadedPlugin, PluginEngine, PluginLimits};

/// What a device whose position predates the plugin's current version gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUpgrade {
    /// It carries on from its position: the new version shapes what comes next.
    #[default]
    Continue,
    /// It is told `reset_required` (`plugin_changed`) and reads its feed again from the start of
    /// a compacted log (from the head of a pruned one).
    Reset,
}

/// One `[plugins.<name>]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The app_type whose pulls this plugin shapes.
    pub app_type: String,
    /// The component, relative to plugins.toml's directory.
    pub wasm: PathBuf,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Free-form; handed to the plugin as JSON.
    #[serde(default)]
    pub config: toml::Table,
    #[serde(default)]
    pub limits: PluginLimits,
    #[serde(default)]
    pub on_upgrade: OnUpgrade,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsFile {
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
}

impl PluginsFile {
    /// Reads and checks `path`; errors name the file and the key.
    pub fn read(path: &Path) -> Result<PluginsFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: PluginsFile = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("{}: `{}`: {}", path.display(), e.path(), e.inner()))?;
        let mut enabled: HashMap<&str, &str> = HashMap::new();
        for (name, entry) in &file.plugins {
            if entry.app_type.is_empty()
                || !entry
                    .app_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "{}: `plugins.{name}.app_type`: {:?} is not an app_type name (letters, digits, `_`)",
                    path.display(),
                    entry.app_type
                ));
            }
            if entry.enabled
                && let Some(other) = enabled.insert(&entry.app_type, name)
            {
                return Err(format!(
                    "{}: plugins `{other}` and `{name}` are both enabled for app_type `{}`; enable one",
                    path.display(),
                    entry.app_type
                ));
            }
        }
        Ok(file)
    }
}

/// An enabled plugin serving one app_type.
pub struct ActivePlugin {
    pub entry: String,
    pub plugin: Arc<LoadedPlugin>,
    pub on_upgrade: OnUpgrade,
    wasm_path: PathBuf,
}

/// The plugins in force at one moment.
#[derive(Default)]
pub struct PluginSet {
    /// app_type → its enabled plugin.
    pub active: HashMap<String, Arc<ActivePlugin>>,
    /// Every entry of the file, enabled or not, by name.
    pub entries: BTreeMap<String, PluginEntry>,
}

impl PluginSet {
    /// Whether plugins.toml names `app_type`, enabled or not.
    pub fn names_app_type(&self, app_type: &str) -> bool {
        self.entries.values().any(|e| e.app_type == app_type)
    }
}

/// What a pull of one app_type goes through.
pub enum AppFeed {
    /// The app_type's enabled plugin.
    Plugin(Arc<ActivePlugin>),
    /// No plugin: the app_type's model list from smartsync.toml.
    Models(Arc<crate::app::Feed>),
}

/// Owns the plugin set in force, and reloads it.
pub struct Reloader {
    engine: Arc<PluginEngine>,
    path: PathBuf,
    current: RwLock<Arc<PluginSet>>,
    last_error: Mutex<Option<String>>,
    /// The files as they were when the set in force was read; the watcher compares with it.
    loaded: Mutex<Fingerprint>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Loads `path` (an absent file is an empty set). Fails when the file is invalid.
    pub fn open(engine: Arc<PluginEngine>, path: PathBuf) -> Result<Reloader, String> {
        let set = if path.exists() {
            load_set(&engine, &path, None)?
        } else {
            tracing::info!(path = %path.display(), "no plugins file; app_types use their model lists");
            PluginSet::default()
        };
        for active in set.active.values() {
            tracing::info!(
                plugin = %active.plugin.label,
                manifest = %active.plugin.manifest.name,
                "plugin loaded"
            );
        }
        let loaded = fingerprint(&path, Some(&set));
        Ok(Reloader {
            engine,
            path,
            current: RwLock::new(Arc::new(set)),
            last_error: Mutex::new(None),
            loaded: Mutex::new(loaded),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The set in force; hold it for the length of a pull.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.read().clone()
    }

    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// The error of the last reload, when it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Reads plugins.toml again and swaps the new set in when every plugin loads.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let this = self.clone();
        let previous = self.current();
        // Taken before the files are read: a change made while loading is seen next time.
        let before = fingerprint(&self.path, Some(&previous));
        let result = tokio::task::spawn_blocking(move || {
            if this.path.exists() {
                load_set(&this.engine, &this.path, Some(&previous))
            } else {
                Ok(PluginSet::default())
            }
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"))
        .and_then(|r| r);
        match result {
            Ok(set) => {
                let labels: Vec<String> = set
                    .active
                    .values()
                    .map(|a| a.plugin.label.clone())
                    .collect();
                *self.current.write() = Arc::new(set);
                *self.last_error.lock() = None;
                *self.loaded.lock() = before;
                tracing::info!(plugins = ?labels, "plugins reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "plugins.toml not reloaded; the running plugins stay");
                *self.last_error.lock() = Some(e.clone());
                // Not retried until the files change again.
                *self.loaded.lock() = before;
                Err(e)
            }
        }
    }

    /// Reloads whenever plugins.toml or a `.wasm` it names changes, until `stop` is set.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = crate::util::stopped(&mut stop) => return,
            }
            let now = fingerprint(&self.path, Some(&self.current()));
            if now == *self.loaded.lock() {
                continue;
            }
            // Let a writer finish: wait until the files stop changing.
            tokio::time::sleep(every.min(Duration::from_millis(250))).await;
            if fingerprint(&self.path, Some(&self.current())) != now {
                continue;
            }
            let _ = self.reload().await;
        }
    }
}

/// Modification time and length of plugins.toml and of every `.wasm` the set names.
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(path: &Path, set: Option<&PluginSet>) -> Fingerprint {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut files = vec![(path.to_path_buf(), stamp(path))];
    let base = path.parent().unwrap_or(Path::new("."));
    for entry in set.iter().flat_map(|s| s.entries.values()) {
        let wasm = base.join(&entry.wasm);
        let s = stamp(&wasm);
        files.push((wasm, s));
    }
    files
}

fn config_json(table: &toml::Table) -> Result<String, String> {
    serde_json::to_string(table).map_err(|e| e.to_string())
}

/// Loads every enabled plugin of `path`, reusing those of `previous` that did not change.
fn load_set(
    engine: &Arc<PluginEngine>,
    path: &Path,
    previous: Option<&PluginSet>,
) -> Result<PluginSet, String> {
    let file = PluginsFile::read(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut set = PluginSet::default();
    for (name, entry) in &file.plugins {
        if !entry.enabled {
            continue;
        }
        let at = |message: String| format!("{}: `plugins.{name}`: {message}", path.display());
        let wasm_path = base.join(&entry.wasm);
        let bytes = std::fs::read(&wasm_path)
            .map_err(|e| at(format!("cannot read {}: {e}", wasm_path.display())))?;
        let config = config_json(&entry.config).map_err(|e| at(format!("config: {e}")))?;
        let version_hash: String = Sha256::digest(&bytes)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reused = previous
            .and_then(|p| p.active.get(&entry.app_type))
            .filter(|a| {
                a.entry == *name
                    && a.wasm_path == wasm_path
                    && a.plugin.version_hash == version_hash
                    && a.plugin.config_json == config
                    && a.plugin.limits == entry.limits
                    && a.on_upgrade == entry.on_upgrade
            })
            .cloned();
        let active = match reused {
            Some(active) => active,
            None => {
                let plugin = engine
                    .load(name, &bytes, config, entry.limits.clone())
                    .map_err(|e| at(format!("{}: {e:#}", wasm_path.display())))?;
                Arc::new(ActivePlugin {
                    entry: name.clone(),
                    plugin: Arc::new(plugin),
                    on_upgrade: entry.on_upgrade,
                    wasm_path,
                })
            }
        };
        set.active.insert(entry.app_type.clone(), active);
    }
    set.entries = file.plugins;
    Ok(set)
}
