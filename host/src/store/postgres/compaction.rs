//! Compaction and dropped tombstones on PostgreSQL: what the SQLite store does (see
//! [`crate::store::EventStore::compact`]), each step in one transaction under the append lock,
//! so that appends (on any host) never see a record half-folded, and the caller's copies are
//! updated just before the commit.

use sqlx::PgPool;

use super::{APPEND_LOCK, event_from_row, raise_meta};
use crate::event::{Event, json_string_list};
use crate::store::columns::meta;
use crate::store::{BeforeCommit, CompactStep, Compacted, StoreError};

async fn begin_locked(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub(super) async fn compact(
    pool: &PgPool,
    after: i64,
    through: i64,
    before_commit: BeforeCommit,
) -> Result<CompactStep, StoreError> {
    let mut tx = begin_locked(pool).await?;
    let mut changes = Compacted::default();
    // The history up to `through` of every record with an event in the range, record by
    // record, oldest first.
    let rows = sqlx::query(&format!(
        "SELECT {} FROM events WHERE (model, record_id) IN \
         (SELECT model, record_id FROM events WHERE id > $1 AND id <= $2) AND id <= $2 \
         ORDER BY model, record_id, id",
        super::EVENT_COLUMNS
    ))
    .bind(after)
    .bind(through)
    .fetch_all(&mut *tx)
    .await?;
    let events = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<Event>, _>>()?;
    for history in events.chunk_by(|a, b| a.model == b.model && a.record_id == b.record_id) {
        if history.len() < 2 {
            continue;
        }
        let Some(mut folded) = crate::event::fold(history) else {
            continue;
        };
        folded.rev = folded.rev.saturating_add(1);
        if let Some(f) = folded.folded.as_mut() {
            f.at = through;
        }
        let older: Vec<i64> = history[..history.len() - 1].iter().map(|e| e.id).collect();
        sqlx::query("DELETE FROM events WHERE id = ANY($1)")
            .bind(&older)
            .execute(&mut *tx)
            .await?;
        changes.dropped.extend(older);
        sqlx::query(
            "UPDATE events SET kind = $2, payload = $3, changed_fields = $4, rev = $5, \
             previous = $6, folded_from = $7, folded_at = $8 WHERE id = $1",
        )
        .bind(folded.id)
        .bind(folded.kind.as_str())
        .bind(&folded.payload)
        .bind(folded.changed_fields.as_deref().map(json_string_list))
        // Stored as the same 32 bits in a signed column.
        .bind(folded.rev as i32)
        .bind(folded.prior.to_column())
        .bind(folded.folded.map(|f| f.from))
        .bind(folded.folded.map(|f| f.at))
        .execute(&mut *tx)
        .await?;
        changes.rewritten.push(folded);
    }
    raise_meta(&mut tx, meta::COMPACTED_THROUGH, through).await?;
    let step = CompactStep {
        dropped: changes.dropped.len() as u64,
        rewritten: changes.rewritten.len() as u64,
    };
    before_commit(&changes);
    tx.commit().await?;
    Ok(step)
}

pub(super) async fn drop_tombstones(
    pool: &PgPool,
    after: i64,
    through: i64,
    before_commit: BeforeCommit,
) -> Result<CompactStep, StoreError> {
    let mut tx = begin_locked(pool).await?;
    let mut changes = Compacted::default();
    let dropped: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM events AS h USING events AS e \
         WHERE e.id > $1 AND e.id <= $2 AND e.kind = 'unlink' \
         AND NOT EXISTS (SELECT 1 FROM events AS n \
                         WHERE n.model = e.model AND n.record_id = e.record_id AND n.id > e.id) \
         AND h.model = e.model AND h.record_id = e.record_id AND h.id <= e.id \
         RETURNING h.id",
    )
    .bind(after)
    .bind(through)
    .fetch_all(&mut *tx)
    .await?;
    changes.dropped = dropped;
    changes.dropped.sort_unstable();
    raise_meta(&mut tx, meta::TOMBSTONES_CHECKED_THROUGH, through).await?;
    // A tombstone is its record's newest event: the newest id dropped is a tombstone.
    if let Some(&newest) = changes.dropped.last() {
        raise_meta(&mut tx, meta::TOMBSTONES_DROPPED_THROUGH, newest).await?;
    }
    let step = CompactStep {
        dropped: changes.dropped.len() as u64,
        rewritten: 0,
    };
    before_commit(&changes);
    tx.commit().await?;
    Ok(step)
}
