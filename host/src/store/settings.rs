//! What a store is opened with. The server's config (`[database]` in smartsync.toml) fills it
//! in; the store knows nothing of the config.

/// How to reach and run the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `sqlite://path/to/file.db`.
    pub url: String,
    /// SQLite's `synchronous`: `off`, `normal`, `full` or `extra`.
    pub synchronous: String,
    /// Connections of the pool that serves reads.
    pub max_connections: u32,
}

impl Default for Settings {
    /// A SQLite file under `data/`, synced in full, 8 readers.
    fn default() -> Settings {
        Settings {
            url: "sqlite://data/smartsync.db".into(),
            synchronous: "full".into(),
            max_connections: 8,
        }
    }
}
