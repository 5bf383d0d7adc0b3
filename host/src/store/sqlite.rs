//! The embedded default: one SQLite file in WAL mode.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::Mutex;

use super::{Appended, EventStore, StoreError};
use crate::config::DatabaseConfig;
use crate::event::{Event, EventKind, NewEvent};
use crate::positions::{DeviceKey, DeviceState};

/// SQLite allows 32766 bound parameters per statement; stay well below it.
const ROWS_PER_INSERT: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The next id to assign, once known. Appends are serialized through this lock, which is
    /// what makes ids follow commit order.
    next_id: Mutex<Option<i64>>,
}

impl SqliteStore {
    pub async fn open(path: &str, config: &DatabaseConfig) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Setup(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let synchronous = SqliteSynchronous::from_str(&config.synchronous)
            .map_err(|e| StoreError::Setup(format!("database.synchronous: {e}")))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            next_id: Mutex::new(None),
        })
    }

    async fn append_in_tx(
        &self,
        next_id: &mut Option<i64>,
        events: &[NewEvent],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut next = match *next_id {
            Some(id) => id,
            None => last_event_id(&mut *tx).await? + 1,
        };

        let mut known: HashMap<&str, i64> = HashMap::new();
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|e| e.dedupe_key.as_deref())
            .collect();
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT id, dedupe_key FROM events WHERE dedupe_key IN (",
            );
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(*key);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut *tx).await? {
                let id: i64 = row.try_get("id")?;
                let key: String = row.try_get("dedupe_key")?;
                if let Some(k) = chunk.iter().find(|k| **k == key) {
                    known.insert(k, id);
                }
            }
        }

        let mut answers = Vec::with_capacity(events.len());
        let mut fresh: Vec<(i64, &NewEvent)> = Vec::with_capacity(events.len());
        for event in events {
            if let Some(key) = event.dedupe_key.as_deref() {
                if let Some(&id) = known.get(key) {
                    answers.push(Appended {
                        id,
                        duplicate: true,
                    });
                    continue;
                }
                known.insert(key, next);
            }
            answers.push(Appended {
                id: next,
                duplicate: false,
            });
            fresh.push((next, event));
            next += 1;
        }

        for chunk in fresh.chunks(ROWS_PER_INSERT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (id, model, record_id, kind, timestamp, payload, \
                 changed_fields, dedupe_key, received_at) ",
            );
            query.push_values(chunk, |mut row, (id, e)| {
                row.push_bind(*id)
                    .push_bind(e.model.as_str())
                    .push_bind(e.record_id)
                    .push_bind(e.kind.as_str())
                    .push_bind(e.timestamp.as_str())
                    .push_bind(e.payload.as_deref())
                    .push_bind(
                        e.changed_fields
                            .as_ref()
                            .and_then(|f| serde_json::to_string(f).ok()),
                    )
                    .push_bind(e.dedupe_key.as_deref())
                    .push_bind(e.received_at.as_str());
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        *next_id = Some(next);
        Ok(answers)
    }
}

async fn last_event_id(
    conn: impl sqlx::Executor<'_, Database = Sqlite>,
) -> Result<i64, StoreError> {
    // sqlite_sequence remembers the highest id ever used, even after its row was deleted.
    let row = sqlx::query(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), \
                    COALESCE((SELECT MAX(id) FROM events), 0)) AS last",
    )
    .fetch_one(conn)
    .await?;
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
    })
}

const EVENT_COLUMNS: &str =
    "id, model, record_id, kind, timestamp, payload, changed_fields, received_at";

fn push_model_filter(query: &mut QueryBuilder<'_, Sqlite>, models: Option<&[String]>) {
    if let Some(models) = models {
        query.push(" AND model IN (");
        let mut list = query.separated(", ");
        for model in models {
            list.push_bind(model.clone());
        }
        list.push_unseparated(")");
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, events: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        let mut next_id = self.next_id.lock().await;
        let result = self.append_in_tx(&mut next_id, events).await;
        if result.is_err() {
            // A commit may fail after all; ask the database again next time.
            *next_id = None;
        }
        result
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
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > "));
        query.push_bind(after).push(" AND id <= ").push_bind(upto);
        push_model_filter(&mut query, models);
        query
            .push(" ORDER BY id LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn count_after(&self, after: i64, models: Option<&[String]>) -> Result<u64, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) AS n FROM events WHERE id > ");
        query.push_bind(after);
        push_model_filter(&mut query, models);
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

    async fn pruned_through(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM log_meta WHERE key = 'pruned_through'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("value")?,
            None => 0,
        })
    }

    async fn received_before(&self, cutoff: &str) -> Result<i64, StoreError> {
        // Walks ids upwards from the oldest kept event and stops at the first young one: it
        // reads only the events about to be pruned.
        let first_young: Option<i64> =
            sqlx::query_scalar("SELECT id FROM events WHERE received_at >= ? ORDER BY id LIMIT 1")
                .bind(cutoff)
                .fetch_optional(&self.pool)
                .await?;
        match first_young {
            Some(id) => Ok(id - 1),
            None => last_event_id(&self.pool).await,
        }
    }

    async fn prune(&self, through: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query("DELETE FROM events WHERE id <= ?")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO log_meta (key, value) VALUES ('pruned_through', ?) \
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        )
        .bind(through)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn load_device(&self, key: &DeviceKey) -> Result<Option<DeviceState>, StoreError> {
        let row = sqlx::query(
            "SELECT position, sync_count, first_sync_time, last_sync_time, feed_epoch FROM devices \
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
            })
        })
        .transpose()
    }

    async fn save_devices(&self, devices: &[(DeviceKey, DeviceState)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in devices.chunks(ROWS_PER_INSERT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO devices (user_id, device_id, app_type, position, sync_count, \
                 first_sync_time, last_sync_time, feed_epoch) ",
            );
            query.push_values(chunk, |mut row, (key, state)| {
                row.push_bind(key.user_id)
                    .push_bind(key.device_id.as_str())
                    .push_bind(key.app_type.as_str())
                    .push_bind(state.position)
                    .push_bind(state.sync_count)
                    .push_bind(state.first_sync_time.as_str())
                    .push_bind(state.last_sync_time.as_str())
                    .push_bind(state.feed_epoch as i64);
            });
            query.push(
                " ON CONFLICT (user_id, device_id, app_type) DO UPDATE SET \
                 position = excluded.position, sync_count = excluded.sync_count, \
                 last_sync_time = excluded.last_sync_time, feed_epoch = excluded.feed_epoch",
            );
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
