//! The embedded default: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{
    Access, BeforeCommit, CompactStep, DeviceKey, DeviceState, EventStore, LogMeta, PendingAppend,
    RecordHead, Settings, StoreError,
};
use crate::event::{Event, EventKind, NewEvent, Prior};

mod lock;
mod space;
mod writer;
use lock::WriterLock;
use writer::Writer;

use super::columns::{folded_of, meta};

pub struct SqliteStore {
    /// Reads, and the migrations.
    pool: SqlitePool,
    /// Every write: one connection on its own thread, which also makes ids follow commit order.
    writer: Writer,
    /// Held by a store opened to write, until it is closed.
    lock: parking_lot::Mutex<Option<WriterLock>>,
}

impl SqliteStore {
    pub async fn open(
        path: &str,
        settings: &Settings,
        access: Access,
    ) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Setup(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let lock = match access {
            Access::Write => Some(WriterLock::take(Path::new(path))?),
            Access::Read => None,
        };
        let synchronous = SqliteSynchronous::from_str(&settings.synchronous)
            .map_err(|e| StoreError::Setup(format!("database.synchronous: {e}")))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(access == Access::Write)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(1)
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("../migrations/sqlite");
        match access {
            Access::Write => migrator.run(&pool).await?,
            // A tool beside a running server leaves the schema to the server.
            Access::Read => check_schema(&pool, &migrator, path).await?,
        }
        let writer = Writer::start(Path::new(path), &settings.synchronous)?;
        Ok(SqliteStore {
            pool,
            writer,
            lock: parking_lot::Mutex::new(lock),
        })
    }

    /// A store on a new file in `dir`, with the default settings: for tests.
    #[cfg(test)]
    pub(crate) async fn open_for_test(dir: &tempfile::TempDir) -> SqliteStore {
        let path = dir.path().join("log.db");
        SqliteStore::open(
            &path.display().to_string(),
            &Settings::default(),
            Access::Write,
        )
        .await
        .expect("store")
    }

    /// Makes the database refuse events of the model `poison`, as a failing disk would: for
    /// tests of failed writes.
    #[cfg(test)]
    pub(crate) async fn refuse_poison_for_test(&self) {
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.model = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
        )
        .execute(&self.pool)
        .await
        .expect("trigger");
    }
}

/// Fails unless the database's schema is the one `migrator` brings it to.
async fn check_schema(
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
    path: &str,
) -> Result<(), StoreError> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let expected: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    if applied != expected {
        return Err(StoreError::Setup(format!(
            "the database {path} has schema versions {applied:?}, this smartsync reads {expected:?}: \
             run `smartsync migrate` (or start the server) with this version first"
        )));
    }
    Ok(())
}

async fn last_event_id(pool: &SqlitePool) -> Result<i64, StoreError> {
    let row = sqlx::query(writer::LAST_EVENT_ID).fetch_one(pool).await?;
    Ok(row.try_get("last")?)
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let kind: String = row.try_get("kind")?;
    let changed: Option<String> = row.try_get("changed_fields")?;
    let id: i64 = row.try_get("id")?;
    Ok(Event {
        id,
        model: row.try_get("model")?,
        record_id: row.try_get("record_id")?,
        kind: EventKind::from_str(&kind).map_err(StoreError::Corrupt)?,
        timestamp: row.try_get("timestamp")?,
        payload: row.try_get("payload")?,
        changed_fields: changed
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("event {id}: changed_fields: {e}")))
            })
            .transpose()?,
        received_at: row.try_get("received_at")?,
        rev: row.try_get("rev")?,
        prior: Prior::from_column(row.try_get("previous")?),
        folded: folded_of(row.try_get("folded_from")?, row.try_get("folded_at")?),
    })
}

const EVENT_COLUMNS: &str = "id, model, record_id, kind, timestamp, payload, changed_fields, \
     received_at, rev, previous, folded_from, folded_at";

fn record_head(row: &SqliteRow) -> Result<RecordHead, StoreError> {
    let kind: String = row.try_get("kind")?;
    let kind = kind
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("event kind {kind:?}")))?;
    Ok(RecordHead {
        record_id: row.try_get("record_id")?,
        event_id: row.try_get("id")?,
        kind,
        received_at: row.try_get("received_at")?,
    })
}

fn push_model_filter(query: &mut QueryBuilder<'_, Sqlite>, models: Option<&[String]>) {
    if let Some(models) = models {
        // `+model`: never read through the events_by_record index, whose order is not the
        // log's; the id range is what bounds a read.
        query.push(" AND +model IN (");
        let mut list = query.separated(", ");
        for model in models {
            list.push_bind(model.clone());
        }
        list.push_unseparated(")");
    }
}

/// The query of [`EventStore::read_after`], after `prefix` (`EXPLAIN QUERY PLAN ` in tests).
fn read_after_query<'a>(
    prefix: &str,
    after: i64,
    upto: i64,
    models: Option<&[String]>,
    limit: usize,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "{prefix}SELECT {EVENT_COLUMNS} FROM events WHERE id > "
    ));
    query.push_bind(after).push(" AND id <= ").push_bind(upto);
    push_model_filter(&mut query, models);
    query
        .push(" ORDER BY id LIMIT ")
        .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    query
}

/// The query of [`EventStore::count_after`], after `prefix`.
fn count_after_query<'a>(
    prefix: &str,
    after: i64,
    models: Option<&[String]>,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "{prefix}SELECT COUNT(*) AS n FROM events WHERE id > "
    ));
    query.push_bind(after);
    push_model_filter(&mut query, models);
    query
}

#[async_trait]
impl EventStore for SqliteStore {
    fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend {
        self.writer.append(batches)
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        last_event_id(&self.pool).await
    }

    async fn read_after(
        &self,
        after: i64,
        upto: i64,
        models: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query = read_after_query("", after, upto, models, limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn count_after(&self, after: i64, models: Option<&[String]>) -> Result<u64, StoreError> {
        let mut query = count_after_query("", after, models);
        let row = query.build().fetch_one(&self.pool).await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn newest(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT ?"
        ))
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    async fn log_meta(&self) -> Result<LogMeta, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM log_meta")
            .fetch_all(&self.pool)
            .await?;
        let mut meta = LogMeta::default();
        for row in rows {
            let key: String = row.try_get("key")?;
            let value: i64 = row.try_get("value")?;
            match key.as_str() {
                meta::PRUNED_THROUGH => meta.pruned_through = value,
                meta::COMPACTED_THROUGH => meta.compacted_through = value,
                meta::TOMBSTONES_CHECKED_THROUGH => meta.tombstones_checked_through = value,
                meta::TOMBSTONES_DROPPED_THROUGH => meta.tombstones_dropped_through = value,
                _ => {}
            }
        }
        Ok(meta)
    }

    async fn received_before(&self, after: i64, cutoff: &str) -> Result<i64, StoreError> {
        // Walks ids upwards from `after` and stops at the first young event: it reads only the
        // events that just grew old. One statement, so one snapshot: an append committed
        // between a search that found no young event and a read of the newest id would be
        // taken for old.
        let through: i64 = sqlx::query_scalar(
            "SELECT MAX(?1, COALESCE(\
             (SELECT id - 1 FROM events WHERE id > ?1 AND received_at >= ?2 ORDER BY id LIMIT 1), \
             (SELECT MAX(id) FROM events), ?1))",
        )
        .bind(after)
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        Ok(through)
    }

    async fn compact(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError> {
        self.writer.compact(after, through, before_commit).await
    }

    async fn drop_tombstones(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError> {
        self.writer
            .drop_tombstones(after, through, before_commit)
            .await
    }

    async fn prune(&self, through: i64) -> Result<u64, StoreError> {
        self.writer.prune(through).await
    }

    async fn record_heads(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordHead>, StoreError> {
        // One walk of `events_by_record`: SQLite reads the other columns of a group's row from
        // the row MAX(id) picked.
        let rows = sqlx::query(
            "SELECT record_id, kind, received_at, MAX(id) AS id FROM events \
             WHERE model = ?1 AND record_id > ?2 \
             GROUP BY record_id ORDER BY record_id LIMIT ?3",
        )
        .bind(model)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_head).collect()
    }

    async fn record_heads_of(
        &self,
        model: &str,
        ids: &[i64],
    ) -> Result<Vec<RecordHead>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        // Within SQLite's limit on bound parameters.
        for chunk in ids.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT record_id, kind, received_at, MAX(id) AS id FROM events WHERE model = ",
            );
            query.push_bind(model).push(" AND record_id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(") GROUP BY record_id ORDER BY record_id");
            let rows = query.build().fetch_all(&self.pool).await?;
            for row in &rows {
                found.push(record_head(row)?);
            }
        }
        found.sort_unstable_by_key(|head| head.record_id);
        Ok(found)
    }

    async fn sources(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, state FROM sources ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("state")?)))
            .collect()
    }

    async fn save_source(&self, name: &str, state: &str) -> Result<(), StoreError> {
        self.writer.save_source(name.into(), state.into()).await
    }

    async fn load_device(&self, key: &DeviceKey) -> Result<Option<DeviceState>, StoreError> {
        let row = sqlx::query(
            "SELECT position, sync_count, first_sync_time, last_sync_time, feed_epoch, tombstone_mark \
             FROM devices \
             WHERE user_id = ? AND device_id = ? AND app_type = ?",
        )
        .bind(key.user_id)
        .bind(&key.device_id)
        .bind(&key.app_type)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DeviceState {
                position: row.try_get("position")?,
                sync_count: row.try_get("sync_count")?,
                first_sync_time: row.try_get("first_sync_time")?,
                last_sync_time: row.try_get("last_sync_time")?,
                // Stored as the same 64 bits in a signed column.
                feed_epoch: row.try_get::<i64, _>("feed_epoch")? as u64,
                tombstone_mark: row.try_get("tombstone_mark")?,
            })
        })
        .transpose()
    }

    async fn save_devices(&self, devices: &[(DeviceKey, DeviceState)]) -> Result<(), StoreError> {
        self.writer.save_devices(devices.to_vec()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(StoreError::WriterStopped);
        }
        if self.writer.storage_full() {
            return Err(StoreError::StorageFull);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
        self.lock.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads of a page, and counts of what is pending, go by the log's id range, whatever the
    /// models: an index by model would read every event of those models ever kept.
    #[tokio::test]
    async fn reads_by_model_follow_the_id_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        let models = vec!["sale.order".to_string(), "res.partner".to_string()];
        for mut query in [
            read_after_query("EXPLAIN QUERY PLAN ", 5, 100, Some(&models), 100),
            count_after_query("EXPLAIN QUERY PLAN ", 5, Some(&models)),
        ] {
            let plan: Vec<String> = query
                .build()
                .fetch_all(&store.pool)
                .await
                .expect("plan")
                .iter()
                .map(|row| row.try_get::<String, _>("detail").expect("detail"))
                .collect();
            assert!(
                plan.iter().any(|step| step.contains("INTEGER PRIMARY KEY")),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("events_by_record")),
                "{plan:?}"
            );
        }
        store.close().await;
    }
}
