//! Durable storage behind one trait, so that backends can be swapped by the database URL.
//!
//! The store keeps events and positions durable, numbers events in commit order and commits the
//! batches queued with it together. Gathering requests into groups, the in-memory tail and
//! device slots live above it, in [`crate::log`] and [`crate::positions`].

mod columns;
mod device;
mod postgres;
mod settings;
mod sqlite;
pub(crate) mod versions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

pub use device::{DeviceKey, DeviceState};
pub use postgres::PostgresStore;
pub use settings::Settings;
pub use sqlite::SqliteStore;

use crate::event::{Derived, Event, EventKind, NewEvent};

/// What became of one batch of [`EventStore::append`].
pub type BatchResult = Result<Vec<Appended>, StoreError>;

/// The answer to [`EventStore::append`], once its batches have committed (or failed): one
/// result per batch.
pub type PendingAppend = Pin<Box<dyn Future<Output = Vec<BatchResult>> + Send + 'static>>;

/// What became of one appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: i64,
    /// The event's dedupe key was already in the log: nothing was stored and `id` is the
    /// original event's.
    pub duplicate: bool,
    /// What the store derived for a stored event from its record's history (`None` for a
    /// duplicate): the event as stored has this prior and these `changed_fields`.
    pub derived: Option<Arc<Derived>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Write(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    WriterStopped,
    /// A failure shared by every batch of one transaction.
    #[error("{0}")]
    Shared(Arc<StoreError>),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Setup(String),
    /// Another process writes to the database.
    #[error("{0}")]
    InUse(String),
    /// The last append found the database's disk full, and none has succeeded since.
    #[error("the database's disk is full")]
    StorageFull,
}

impl StoreError {
    /// Whether the database refused the write because its disk (or its size limit) is full:
    /// nothing is lost, and the same write succeeds once space is freed.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::StorageFull => true,
            StoreError::Write(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Database(sqlx::Error::Database(e)) => e.code().as_deref() == Some("13"),
            StoreError::Shared(inner) => inner.is_storage_full(),
            _ => false,
        }
    }
}

/// A record's newest event, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead {
    pub record_id: i64,
    /// The event's id and kind.
    pub event_id: i64,
    pub kind: EventKind,
    /// When the server received it (RFC 3339, UTC).
    pub received_at: String,
}

/// What one step of compaction changes, shown to the caller just before it commits (see
/// [`EventStore::compact`]).
#[derive(Debug, Default)]
pub struct Compacted {
    /// Events deleted.
    pub dropped: Vec<i64>,
    /// Events rewritten, as they now are.
    pub rewritten: Vec<Event>,
}

/// Called with a step's changes inside its transaction, before the commit: whoever keeps
/// copies of events updates them there, so that no reader sees a dropped change gone from the
/// store while its copy of the event that absorbed it is still the old one.
pub type BeforeCommit = Box<dyn FnOnce(&Compacted) + Send>;

/// How far retention has gone (the `log_meta` table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMeta {
    /// Every event with an id up to this one may have been pruned (0: nothing was).
    pub pruned_through: i64,
    /// Every event up to this id had its record's older changes folded into it.
    pub compacted_through: i64,
    /// Deletions up to this id were looked at for dropping.
    pub tombstones_checked_through: i64,
    /// The newest deletion dropped (0: none was).
    pub tombstones_dropped_through: i64,
}

/// What one step of compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStep {
    pub dropped: u64,
    pub rewritten: u64,
}

/// What a process opens the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// To write: the server, or `smartsync migrate`. The SQLite store has one such process at
    /// a time, and refuses to open while another one has it open.
    Write,
    /// To read beside a running server: `smartsync plugin replay`.
    Read,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Queues `batches` to be appended, each all or nothing, numbered in order after every id
    /// ever used. An event whose dedupe key is already stored, or appears earlier in the same
    /// or an earlier batch, is not stored again: its answer is the original id. A batch that
    /// fails fails alone; the answer has one result per batch, in order.
    ///
    /// Calls commit in the order they are made: the batches take their place when `append` is
    /// called, not when the answer is first polled, so a caller may queue several calls and
    /// then await their answers in turn. The store keeps no reference to the batches once it
    /// has answered.
    fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend;

    /// The highest id ever assigned (0 for an empty log).
    async fn last_event_id(&self) -> Result<i64, StoreError>;

    /// Events with `after < id <= upto`, of `models` when given, in id order, at most `limit`.
    async fn read_after(
        &self,
        after: i64,
        upto: i64,
        models: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// How many events with `id > after`, of `models` when given, the log holds.
    async fn count_after(&self, after: i64, models: Option<&[String]>) -> Result<u64, StoreError>;

    /// The newest `n` events, oldest first.
    async fn newest(&self, n: usize) -> Result<Vec<Event>, StoreError>;

    /// How far pruning and compaction have gone.
    async fn log_meta(&self) -> Result<LogMeta, StoreError>;

    /// The highest id, `after` or above, such that it and every event between `after` and it
    /// were received before `cutoff` (an RFC 3339 UTC time as [`crate::event::now_rfc3339`]
    /// writes it); `after` when the first event after it is younger.
    async fn received_before(&self, after: i64, cutoff: &str) -> Result<i64, StoreError>;

    /// Compacts the events with `after < id <= through`, in one transaction: each of their
    /// records' changes up to `through` are folded ([`crate::event::fold`]) into the newest of
    /// them, which is rewritten, and the older ones deleted. Records `compacted_through` as
    /// `through`. Calls `before_commit` with the changes just before committing.
    async fn compact(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError>;

    /// Drops the deletions with `after < id <= through` that are still their record's newest
    /// event, with whatever is left of their record's history, in one transaction. Records
    /// `tombstones_checked_through` as `through`, and `tombstones_dropped_through` as the
    /// newest deletion dropped. Calls `before_commit` with the changes just before committing.
    async fn drop_tombstones(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError>;

    /// Deletes the events with `id <= through` and records `through` as pruned, in one
    /// transaction. Returns how many events were deleted.
    async fn prune(&self, through: i64) -> Result<u64, StoreError>;

    /// The newest event of each record of `model` with an id above `after`, in record id
    /// order, at most `limit` records.
    async fn record_heads(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordHead>, StoreError>;

    /// The newest event of each of the records `ids` of `model` the log holds (records it has
    /// no event of are left out), in record id order.
    async fn record_heads_of(
        &self,
        model: &str,
        ids: &[i64],
    ) -> Result<Vec<RecordHead>, StoreError>;

    /// Every source state saved with [`EventStore::save_source`], by name.
    async fn sources(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Keeps `state` as the source `name`'s, replacing what was kept.
    async fn save_source(&self, name: &str, state: &str) -> Result<(), StoreError>;

    async fn load_device(&self, key: &DeviceKey) -> Result<Option<DeviceState>, StoreError>;

    /// Writes the given device states in one transaction.
    async fn save_devices(&self, devices: &[(DeviceKey, DeviceState)]) -> Result<(), StoreError>;

    /// Whether the database answers and takes events: [`StoreError::StorageFull`] from an
    /// append that found the disk full until one succeeds again.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes connections, waiting for queries in flight.
    async fn close(&self);
}

/// The file path in a `sqlite://` URL, if it is one.
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty()).then_some(path)
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by the URL for `access` and brings its schema up to date.
pub async fn open(settings: &Settings, access: Access) -> Result<Arc<dyn EventStore>, StoreError> {
    if is_postgres(&settings.url) {
        return Ok(Arc::new(
            PostgresStore::open(&settings.url, settings, access).await?,
        ));
    }
    match sqlite_path(&settings.url) {
        Some(path) => Ok(Arc::new(SqliteStore::open(path, settings, access).await?)),
        None => Err(StoreError::Setup(format!(
            "unsupported database URL {:?}: expected sqlite://path or postgres://…",
            settings.url
        ))),
    }
}
