//! PostgreSQL: one log shared by any number of hosts.
//!
//! **Why a reader never skips an event.** Readers keep a position and read "after N", so an
//! event must never become visible after one with a higher id. A sequence cannot promise that:
//! it hands out ids before commit, and a transaction holding 101 may commit after one holding
//! 102 was read. Here an append transaction first takes a transaction-level advisory lock
//! ([`APPEND_LOCK`]), held until it commits or rolls back; only then does it read the last id
//! ever assigned (`log_meta.last_event_id`) and number its events after it. So the transaction
//! that assigns id N starts numbering only after every transaction with smaller ids has
//! committed (or rolled back, its ids unused): a snapshot that sees N sees every id below N.
//! The cost is that appends from all hosts commit one transaction at a time; each host already
//! gathers concurrent requests into one transaction (group commit), so a transaction carries
//! many events.
//!
//! Everything else is what the SQLite store does, in SQL PostgreSQL reads: the same columns,
//! the same dedupe rules ([`super::versions`]), the same derived priors.

mod compaction;
mod writer;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{QueryBuilder, Row};

use super::columns::{folded_of, meta};
use super::{
    Access, BeforeCommit, CompactStep, DeviceKey, DeviceState, EventStore, LogMeta, PendingAppend,
    RecordHead, Settings, StoreError,
};
use crate::event::{Event, EventKind, NewEvent, Prior};
use writer::Writer;

/// The advisory lock every append transaction holds to its commit (an arbitrary constant:
/// "smartsyn" in ASCII).
pub const APPEND_LOCK: i64 = 0x736d_6172_7473_796e;

/// The `log_meta` key of the last id ever assigned.
const LAST_EVENT_ID: &str = "last_event_id";

pub struct PostgresStore {
    pool: PgPool,
    writer: Writer,
}

impl PostgresStore {
    pub async fn open(
        url: &str,
        settings: &Settings,
        access: Access,
    ) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Setup(format!("database.url: {e}")))?
            .application_name("smartsync");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .min_connections(1)
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("../migrations/postgres");
        match access {
            // sqlx runs PostgreSQL migrations under an advisory lock: hosts starting together
            // apply each one once.
            Access::Write => migrator.run(&pool).await?,
            Access::Read => {
                let applied: Vec<i64> = sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                let expected: Vec<i64> = migrator.iter().map(|m| m.version).collect();
                if applied != expected {
                    return Err(StoreError::Setup(format!(
                        "the database has schema versions {applied:?}, this smartsync reads \
                         {expected:?}: run `smartsync migrate` with this version first"
                    )));
                }
            }
        }
        let writer = Writer::start(pool.clone());
        Ok(PostgresStore { pool, writer })
    }
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
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
        // Stored as the same 32 bits in a signed column.
        rev: row.try_get::<i32, _>("rev")? as u32,
        prior: Prior::from_column(row.try_get("previous")?),
        folded: folded_of(row.try_get("folded_from")?, row.try_get("folded_at")?),
    })
}

const EVENT_COLUMNS: &str = "id, model, record_id, kind, timestamp, payload, changed_fields, \
     received_at, rev, previous, folded_from, folded_at";

fn record_head(row: &PgRow) -> Result<RecordHead, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(RecordHead {
        record_id: row.try_get("record_id")?,
        event_id: row.try_get("id")?,
        kind: kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("event kind {kind:?}")))?,
        received_at: row.try_get("received_at")?,
    })
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PostgresStore {
    fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend {
        self.writer.append(batches)
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT value FROM log_meta WHERE key = $1")
            .bind(LAST_EVENT_ID)
            .fetch_optional(&self.pool)
            .await?;
        Ok(last.unwrap_or(0))
    }

    async fn read_after(
        &self,
        after: i64,
        upto: i64,
        models: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query =
            QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > "));
        query.push_bind(after).push(" AND id <= ").push_bind(upto);
        if let Some(models) = models {
            query
                .push(" AND model = ANY(")
                .push_bind(models.to_vec())
                .push(")");
        }
        query.push(" ORDER BY id LIMIT ").push_bind(limit_of(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn count_after(&self, after: i64, models: Option<&[String]>) -> Result<u64, StoreError> {
        let mut query = QueryBuilder::new("SELECT COUNT(*) AS n FROM events WHERE id > ");
        query.push_bind(after);
        if let Some(models) = models {
            query
                .push(" AND model = ANY(")
                .push_bind(models.to_vec())
                .push(")");
        }
        let n: i64 = query.build().fetch_one(&self.pool).await?.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn newest(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit_of(n))
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
                meta::TOMBSTONES_CHECKED_THROUGH => {
                    meta.tombstones_checked_through = value;
                }
                meta::TOMBSTONES_DROPPED_THROUGH => {
                    meta.tombstones_dropped_through = value;
                }
                _ => {}
            }
        }
        Ok(meta)
    }

    async fn received_before(&self, after: i64, cutoff: &str) -> Result<i64, StoreError> {
        // One statement, one snapshot (see the SQLite store).
        let through: i64 = sqlx::query_scalar(
            "SELECT GREATEST($1, COALESCE(\
             (SELECT id - 1 FROM events WHERE id > $1 AND received_at >= $2 ORDER BY id LIMIT 1), \
             (SELECT MAX(id) FROM events), $1))",
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
        compaction::compact(&self.pool, after, through, before_commit).await
    }

    async fn drop_tombstones(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError> {
        compaction::drop_tombstones(&self.pool, after, through, before_commit).await
    }

    async fn prune(&self, through: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM events WHERE id <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        raise_meta(&mut tx, meta::PRUNED_THROUGH, through).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn record_heads(
        &self,
        model: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (record_id) record_id, kind, received_at, id FROM events \
             WHERE model = $1 AND record_id > $2 ORDER BY record_id, id DESC LIMIT $3",
        )
        .bind(model)
        .bind(after)
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_head).collect()
    }

    async fn record_heads_of(
        &self,
        model: &str,
        ids: &[i64],
    ) -> Result<Vec<RecordHead>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (record_id) record_id, kind, received_at, id FROM events \
             WHERE model = $1 AND record_id = ANY($2) ORDER BY record_id, id DESC",
        )
        .bind(model)
        .bind(ids.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_head).collect()
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
        sqlx::query(
            "INSERT INTO sources (name, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(name)
        .bind(state)
        .bind(crate::event::now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_device(&self, key: &DeviceKey) -> Result<Option<DeviceState>, StoreError> {
        let row = sqlx::query(
            "SELECT position, sync_count, first_sync_time, last_sync_time, feed_epoch, \
             tombstone_mark FROM devices \
             WHERE user_id = $1 AND device_id = $2 AND app_type = $3",
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
        let mut tx = self.pool.begin().await?;
        for (key, state) in devices {
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, app_type, position, sync_count, \
                 first_sync_time, last_sync_time, feed_epoch, tombstone_mark) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (user_id, device_id, app_type) DO UPDATE SET \
                 position = EXCLUDED.position, sync_count = EXCLUDED.sync_count, \
                 last_sync_time = EXCLUDED.last_sync_time, feed_epoch = EXCLUDED.feed_epoch, \
                 tombstone_mark = EXCLUDED.tombstone_mark",
            )
            .bind(key.user_id)
            .bind(&key.device_id)
            .bind(&key.app_type)
            .bind(state.position)
            .bind(state.sync_count)
            .bind(&state.first_sync_time)
            .bind(&state.last_sync_time)
            .bind(state.feed_epoch as i64)
            .bind(state.tombstone_mark)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(StoreError::WriterStopped);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Raises a `log_meta` value to `value`.
async fn raise_meta(tx: &mut sqlx::PgConnection, key: &str, value: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO log_meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(log_meta.value, EXCLUDED.value)",
    )
    .bind(key)
    .bind(value)
    .execute(tx)
    .await?;
    Ok(())
}
