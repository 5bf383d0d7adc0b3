//! The one connection that writes, on a thread of its own.
//!
//! Every write to the SQLite file (appends, pruning, device positions) runs here, in the order
//! it was asked for, on one connection that keeps its statements prepared. A batch of appends
//! therefore costs one hand-off between threads and single-row statements that SQLite has
//! already compiled, and the server's writers never wait for each other inside SQLite's busy
//! handler. Reads stay on the sqlx pool: in WAL mode they never wait for this connection, and
//! they see each transaction once it has committed.
//!
//! Appends that queue up while a transaction commits are committed together in the next one
//! (group commit at the connection): the thread is never idle while appends wait, and a commit's
//! sync to disk is shared by all of them. Each batch runs inside a savepoint of its own: a batch
//! whose statements fail is rolled back alone, in place, and the others commit. Only a failure of
//! the transaction itself (beginning it, or committing it) fails every batch in it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::space::Space;
use crate::event::{DedupeKey, Event, NewEvent, Previous, Prior, json_string_list};
use crate::store::columns::meta;
use crate::store::versions::{Newest, Verdict, judge};
use crate::store::{
    Appended, BatchResult, BeforeCommit, CompactStep, Compacted, DeviceKey, DeviceState,
    PendingAppend, StoreError,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Where the answers to one call's batches go.
type AppendReply = oneshot::Sender<Vec<BatchResult>>;

/// Queued appends are merged into one transaction until it holds at least this many events.
const MERGE_UP_TO_EVENTS: usize = 8192;

enum Job {
    Append {
        batches: Vec<Arc<Vec<NewEvent>>>,
        reply: AppendReply,
    },
    Prune {
        through: i64,
        reply: Reply<u64>,
    },
    Compact {
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
        reply: Reply<CompactStep>,
    },
    DropTombstones {
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
        reply: Reply<CompactStep>,
    },
    SaveDevices {
        devices: Vec<(DeviceKey, DeviceState)>,
        reply: Reply<()>,
    },
    SaveSource {
        name: String,
        state: String,
        reply: Reply<()>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// The handle to the writer thread. Dropping it (or [`Writer::close`]) ends the thread once the
/// jobs already sent are done.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Cleared when the thread ends, however it ends.
    running: Arc<AtomicBool>,
    /// Whether the disk is full, as appends found it.
    space: Arc<Space>,
}

/// Clears the flag when dropped: when the writer thread returns or unwinds.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Writer {
    /// Opens a connection to the database at `path`, whose schema must be in place, and starts
    /// the thread that owns it.
    pub(super) fn start(path: &Path, synchronous: &str) -> Result<Writer, StoreError> {
        let conn = open(path, synchronous)?;
        let (jobs, queue) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(true));
        let guard = Running(running.clone());
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let space = Arc::new(Space::new(dir));
        let noted = space.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &queue, guard, &noted))
            .map_err(|e| StoreError::Setup(format!("cannot start the database writer: {e}")))?;
        Ok(Writer {
            jobs,
            running,
            space,
        })
    }

    /// Whether the thread still takes writes.
    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Whether the disk is full (see [`Space::is_full`]).
    pub(super) fn storage_full(&self) -> bool {
        self.space.is_full()
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// See [`crate::store::EventStore::append`]: queued here and now, answered later. The
    /// writer lets go of the batches before it answers, so the caller holds the only
    /// references again afterwards.
    pub(super) fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend {
        let count = batches.len();
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job::Append { batches, reply }).is_ok();
        Box::pin(async move {
            let answer = if queued { answer.await.ok() } else { None };
            answer.unwrap_or_else(|| (0..count).map(|_| Err(StoreError::WriterStopped)).collect())
        })
    }

    pub(super) async fn prune(&self, through: i64) -> Result<u64, StoreError> {
        self.call(|reply| Job::Prune { through, reply }).await
    }

    pub(super) async fn compact(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError> {
        self.call(|reply| Job::Compact {
            after,
            through,
            before_commit,
            reply,
        })
        .await
    }

    pub(super) async fn drop_tombstones(
        &self,
        after: i64,
        through: i64,
        before_commit: BeforeCommit,
    ) -> Result<CompactStep, StoreError> {
        self.call(|reply| Job::DropTombstones {
            after,
            through,
            before_commit,
            reply,
        })
        .await
    }

    pub(super) async fn save_devices(
        &self,
        devices: Vec<(DeviceKey, DeviceState)>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Job::SaveDevices { devices, reply }).await
    }

    pub(super) async fn save_source(&self, name: String, state: String) -> Result<(), StoreError> {
        self.call(|reply| Job::SaveSource { name, state, reply })
            .await
    }

    /// Finishes the jobs already sent, then closes the connection.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close { done }).is_ok() {
            let _ = closed.await;
        }
    }
}

fn open(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Per connection, so set here as well as on the pool: the pool's setting does not reach us.
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Setup(format!(
            "the database is in journal mode {mode:?}, expected WAL"
        )));
    }
    Ok(conn)
}

fn run(mut conn: Connection, queue: &mpsc::Receiver<Job>, running: Running, space: &Space) {
    // The next id to assign, once read: only this thread appends, so it stays true until a
    // transaction fails, when it is read again.
    let mut next_id: Option<i64> = None;
    // A job taken off the queue while merging appends, to run after them.
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Append { batches, reply } => {
                let mut total: usize = batches.iter().map(|b| b.len()).sum();
                let mut merged = vec![(batches, reply)];
                while total < MERGE_UP_TO_EVENTS {
                    match queue.try_recv() {
                        Ok(Job::Append { batches, reply }) => {
                            total += batches.iter().map(|b| b.len()).sum::<usize>();
                            merged.push((batches, reply));
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                append_merged(&mut conn, &mut next_id, merged, space);
            }
            Job::Prune { through, reply } => {
                let _ = reply.send(prune(&mut conn, through));
            }
            Job::Compact {
                after,
                through,
                before_commit,
                reply,
            } => {
                let _ = reply.send(compact(&mut conn, after, through, before_commit));
            }
            Job::DropTombstones {
                after,
                through,
                before_commit,
                reply,
            } => {
                let _ = reply.send(drop_tombstones(&mut conn, after, through, before_commit));
            }
            Job::SaveDevices { devices, reply } => {
                let _ = reply.send(save_devices(&mut conn, &devices));
            }
            Job::SaveSource { name, state, reply } => {
                let _ = reply.send(save_source(&conn, &name, &state));
            }
            Job::Close { done } => {
                if let Err((_, e)) = conn.close() {
                    tracing::error!(error = %e, "closing the database writer's connection");
                }
                drop(running);
                let _ = done.send(());
                return;
            }
        }
        if !can_go_on(&conn) {
            return;
        }
    }
}

/// Commits the calls' batches in one transaction and answers each call.
fn append_merged(
    conn: &mut Connection,
    next_id: &mut Option<i64>,
    merged: Vec<(Vec<Arc<Vec<NewEvent>>>, AppendReply)>,
    space: &Space,
) {
    let all: Vec<&[NewEvent]> = merged
        .iter()
        .flat_map(|(batches, _)| batches.iter().map(|b| b.as_slice()))
        .collect();
    let appended = append(conn, next_id, &all);
    // A batch refused for want of space, when the others committed, counts as a refusal.
    space.note(match &appended {
        Err(e) => Err(e),
        Ok(results) => results
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| e.is_storage_full()))
            .map_or(Ok(()), Err),
    });
    let mut results = match appended {
        Ok(results) => results,
        Err(e) => {
            // The transaction rolled back, or its commit may have failed after all: read the
            // next id from the database again.
            *next_id = None;
            if !e.is_storage_full() {
                tracing::error!(error = %e, events = all.iter().map(|b| b.len()).sum::<usize>(), "appending to the event log failed");
            }
            let shared = Arc::new(e);
            all.iter()
                .map(|_| Err(StoreError::Shared(shared.clone())))
                .collect()
        }
    }
    .into_iter();
    drop(all);
    for (batches, reply) in merged {
        let answers: Vec<BatchResult> = results.by_ref().take(batches.len()).collect();
        // Let go of the events before answering: the caller takes them back.
        drop(batches);
        let _ = reply.send(answers);
    }
}

/// The highest id ever assigned: sqlite_sequence remembers it even after its row was pruned.
pub(super) const LAST_EVENT_ID: &str = "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence \
     WHERE name = 'events'), 0), COALESCE((SELECT MAX(id) FROM events), 0)) AS last";

/// Whether the connection can take the next write. A rollback that failed (rusqlite ignores
/// that when a transaction is dropped) leaves it inside a transaction, where every later write
/// would fail: this rolls back again, and answers false if even that fails.
fn can_go_on(conn: &Connection) -> bool {
    if conn.is_autocommit() {
        return true;
    }
    match conn.execute_batch("ROLLBACK") {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "the database writer cannot leave a failed transaction; it stops, and readiness fails");
            false
        }
    }
}

/// Appends the batches, in order, in one transaction, each in a savepoint of its own.
fn append(
    conn: &mut Connection,
    next_id: &mut Option<i64>,
    batches: &[&[NewEvent]],
) -> Result<Vec<BatchResult>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut next = match *next_id {
        Some(id) => id,
        None => tx.query_row(LAST_EVENT_ID, [], |row| row.get::<_, i64>(0))? + 1,
    };
    let mut results = Vec::with_capacity(batches.len());
    {
        let mut statements = Statements {
            lookup: tx.prepare_cached("SELECT id FROM events WHERE dedupe_key = ?1")?,
            insert: tx.prepare_cached(
                "INSERT INTO events (id, model, record_id, kind, timestamp, payload, \
                 changed_fields, dedupe_key, received_at, previous) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            newest: tx.prepare_cached(
                "SELECT id, timestamp, kind, payload FROM events WHERE model = ?1 AND record_id = ?2 \
                 ORDER BY id DESC LIMIT 1",
            )?,
            forget_key: tx.prepare_cached("UPDATE events SET dedupe_key = NULL WHERE id = ?1")?,
        };
        let mut savepoint = tx.prepare_cached("SAVEPOINT batch")?;
        let mut release = tx.prepare_cached("RELEASE batch")?;
        let mut rollback_to = tx.prepare_cached("ROLLBACK TO batch")?;
        // Keys stored by this transaction's earlier batches: not visible to `lookup` yet.
        let mut stored_here: HashMap<&str, i64> = HashMap::new();
        for batch in batches {
            savepoint.execute([])?;
            match append_batch(&mut statements, &stored_here, next, batch) {
                Ok(appended) => {
                    release.execute([])?;
                    next = appended.next;
                    stored_here.extend(appended.keys);
                    results.push(Ok(appended.answers));
                }
                Err(e) => {
                    // Undoes this batch only. SQLite may have rolled back the whole transaction
                    // instead (it does when the disk fills mid-transaction, and may on I/O
                    // errors): then the savepoint is gone, and the batch's own error, which
                    // says why, fails every batch.
                    if let Err(gone) = rollback_to.execute([]) {
                        return Err(if tx.is_autocommit() { e } else { gone.into() });
                    }
                    release.execute([])?;
                    results.push(Err(e));
                }
            }
        }
    }
    tx.commit()?;
    *next_id = Some(next);
    Ok(results)
}

struct Statements<'c> {
    lookup: rusqlite::CachedStatement<'c>,
    insert: rusqlite::CachedStatement<'c>,
    /// A record's newest event: its id, timestamp, kind and payload.
    newest: rusqlite::CachedStatement<'c>,
    /// Takes the key from an event whose version is stored again as a newer event.
    forget_key: rusqlite::CachedStatement<'c>,
}

/// One batch, appended: its answers, the next free id, and the keys it stored.
struct AppendedBatch<'e> {
    answers: Vec<Appended>,
    next: i64,
    keys: HashMap<&'e str, i64>,
}

fn append_batch<'e>(
    statements: &mut Statements<'_>,
    stored_here: &HashMap<&str, i64>,
    mut next: i64,
    batch: &'e [NewEvent],
) -> Result<AppendedBatch<'e>, StoreError> {
    let mut answers = Vec::with_capacity(batch.len());
    // Keys stored by this batch's earlier events.
    let mut keys: HashMap<&str, i64> = HashMap::new();
    for event in batch {
        // The record's newest event: it tells versions apart, and what the record was before.
        let newest = newest_of(statements, event)?;
        if let Some(dedupe) = &event.dedupe_key {
            let key = dedupe.as_str();
            // This batch's keys first: a version it stored again moved its key to a newer id.
            let known = match keys.get(key).or_else(|| stored_here.get(key)) {
                Some(&id) => Some(id),
                None => statements
                    .lookup
                    .query_row([key], |row| row.get::<_, i64>(0))
                    .optional()?,
            };
            match judge(dedupe, known, newest.as_ref(), event) {
                Verdict::Duplicate(id) => {
                    answers.push(Appended {
                        id,
                        duplicate: true,
                        derived: None,
                    });
                    continue;
                }
                Verdict::Store { forget } => {
                    if let Some(id) = forget {
                        statements.forget_key.execute([id])?;
                    }
                }
            }
            keys.insert(key, next);
        }
        let derived = crate::event::derive(
            newest.as_ref().map(|n| Previous {
                kind: n.kind,
                payload: n.payload.as_deref(),
            }),
            event.kind,
            event.payload.as_deref(),
            event.changed_fields.as_deref(),
        );
        let changed_fields = derived.changed_fields.as_deref().map(json_string_list);
        statements.insert.execute(params![
            next,
            event.model,
            event.record_id,
            event.kind.as_str(),
            event.timestamp,
            event.payload,
            changed_fields,
            event.dedupe_key.as_ref().map(DedupeKey::as_str),
            event.received_at,
            derived.prior.to_column(),
        ])?;
        answers.push(Appended {
            id: next,
            duplicate: false,
            derived: Some(Arc::new(derived)),
        });
        next += 1;
    }
    Ok(AppendedBatch {
        answers,
        next,
        keys,
    })
}

fn newest_of(
    statements: &mut Statements<'_>,
    event: &NewEvent,
) -> Result<Option<Newest>, StoreError> {
    let row = statements
        .newest
        .query_row(params![event.model, event.record_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    row.map(|(id, timestamp, kind, payload)| {
        Ok(Newest {
            id,
            timestamp,
            kind: kind.parse().map_err(StoreError::Corrupt)?,
            payload,
        })
    })
    .transpose()
}

fn prune(conn: &mut Connection, through: i64) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = tx.execute("DELETE FROM events WHERE id <= ?1", [through])?;
    tx.execute(
        "INSERT INTO log_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![meta::PRUNED_THROUGH, through],
    )?;
    tx.commit()?;
    Ok(deleted as u64)
}

/// Raises a `log_meta` value to `value`.
fn raise_meta(tx: &rusqlite::Transaction<'_>, key: &str, value: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO log_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![key, value],
    )?;
    Ok(())
}

fn event_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let id: i64 = row.get(0)?;
    let kind: String = row.get(3)?;
    let changed: Option<String> = row.get(6)?;
    let corrupt = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, what.into())
    };
    Ok(Event {
        id,
        model: row.get(1)?,
        record_id: row.get(2)?,
        kind: kind.parse().map_err(corrupt)?,
        timestamp: row.get(4)?,
        payload: row.get(5)?,
        changed_fields: changed
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(format!("event {id}: changed_fields: {e}")))
            })
            .transpose()?,
        received_at: row.get(7)?,
        rev: row.get(8)?,
        prior: Prior::from_column(row.get(9)?),
        folded: super::folded_of(row.get(10)?, row.get(11)?),
    })
}

/// See [`crate::store::EventStore::compact`].
fn compact(
    conn: &mut Connection,
    after: i64,
    through: i64,
    before_commit: BeforeCommit,
) -> Result<CompactStep, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut changes = Compacted::default();
    {
        // The history up to `through` of every record with an event in the range, record by
        // record, oldest first: one probe of events_by_record per record.
        let mut histories = tx.prepare_cached(
            "SELECT id, model, record_id, kind, timestamp, payload, changed_fields, received_at, \
             rev, previous, folded_from, folded_at FROM events WHERE (model, record_id) IN \
             (SELECT model, record_id FROM events WHERE id > ?1 AND id <= ?2) AND id <= ?2 \
             ORDER BY model, record_id, id",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
        let mut rewrite = tx.prepare_cached(
            "UPDATE events SET kind = ?2, payload = ?3, changed_fields = ?4, rev = ?5, \
             previous = ?6, folded_from = ?7, folded_at = ?8 WHERE id = ?1",
        )?;
        let mut rows = histories.query_map(params![after, through], event_of_row)?;
        let mut history: Vec<Event> = Vec::new();
        let mut next = rows.next().transpose()?;
        while let Some(event) = next {
            next = rows.next().transpose()?;
            let same_record = next
                .as_ref()
                .is_some_and(|n| n.model == event.model && n.record_id == event.record_id);
            history.push(event);
            if same_record {
                continue;
            }
            if history.len() > 1
                && let Some(mut folded) = crate::event::fold(&history)
            {
                folded.rev = folded.rev.saturating_add(1);
                if let Some(f) = folded.folded.as_mut() {
                    f.at = through;
                }
                for older in &history[..history.len() - 1] {
                    delete.execute([older.id])?;
                    changes.dropped.push(older.id);
                }
                rewrite.execute(params![
                    folded.id,
                    folded.kind.as_str(),
                    folded.payload,
                    folded.changed_fields.as_deref().map(json_string_list),
                    folded.rev,
                    folded.prior.to_column(),
                    folded.folded.map(|f| f.from),
                    folded.folded.map(|f| f.at),
                ])?;
                changes.rewritten.push(folded);
            }
            history.clear();
        }
    }
    raise_meta(&tx, meta::COMPACTED_THROUGH, through)?;
    let step = CompactStep {
        dropped: changes.dropped.len() as u64,
        rewritten: changes.rewritten.len() as u64,
    };
    before_commit(&changes);
    tx.commit()?;
    Ok(step)
}

/// See [`crate::store::EventStore::drop_tombstones`].
fn drop_tombstones(
    conn: &mut Connection,
    after: i64,
    through: i64,
    before_commit: BeforeCommit,
) -> Result<CompactStep, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut changes = Compacted::default();
    {
        let mut tombstones = tx.prepare_cached(
            "SELECT id, model, record_id FROM events AS e WHERE id > ?1 AND id <= ?2 \
             AND kind = 'unlink' AND NOT EXISTS (SELECT 1 FROM events AS n \
             WHERE n.model = e.model AND n.record_id = e.record_id AND n.id > e.id)",
        )?;
        let mut history = tx.prepare_cached(
            "SELECT id FROM events WHERE model = ?1 AND record_id = ?2 AND id <= ?3",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE id = ?1")?;
        let found: Vec<(i64, String, i64)> = tombstones
            .query_map(params![after, through], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (id, model, record_id) in found {
            let ids: Vec<i64> = history
                .query_map(params![model, record_id, id], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                delete.execute([id])?;
                changes.dropped.push(id);
            }
        }
    }
    raise_meta(&tx, meta::TOMBSTONES_CHECKED_THROUGH, through)?;
    // A tombstone is its record's newest event: the newest id dropped is a tombstone.
    if let Some(&newest) = changes.dropped.iter().max() {
        raise_meta(&tx, meta::TOMBSTONES_DROPPED_THROUGH, newest)?;
    }
    let step = CompactStep {
        dropped: changes.dropped.len() as u64,
        rewritten: 0,
    };
    before_commit(&changes);
    tx.commit()?;
    Ok(step)
}

fn save_devices(
    conn: &mut Connection,
    devices: &[(DeviceKey, DeviceState)],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO devices (user_id, device_id, app_type, position, sync_count, \
             first_sync_time, last_sync_time, feed_epoch, tombstone_mark) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (user_id, device_id, app_type) DO UPDATE SET \
             position = excluded.position, sync_count = excluded.sync_count, \
             last_sync_time = excluded.last_sync_time, feed_epoch = excluded.feed_epoch, \
             tombstone_mark = excluded.tombstone_mark",
        )?;
        for (key, state) in devices {
            upsert.execute(params![
                key.user_id,
                key.device_id,
                key.app_type,
                state.position,
                state.sync_count,
                state.first_sync_time,
                state.last_sync_time,
                // Stored as the same 64 bits in a signed column.
                state.feed_epoch as i64,
                state.tombstone_mark,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn save_source(conn: &Connection, name: &str, state: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sources (name, state, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )?
    .execute(params![name, state, crate::event::now_rfc3339()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::store::{EventStore, SqliteStore};

    fn event(model: &str, key: Option<&str>) -> NewEvent {
        NewEvent::test_write(model, key)
    }

    /// (id, duplicate) of an answer.
    type Answer = (i64, bool);

    fn fresh(id: i64) -> Answer {
        (id, false)
    }

    fn duplicate(id: i64) -> Answer {
        (id, true)
    }

    /// The answers without what the store derived.
    fn plain(answers: Vec<BatchResult>) -> Vec<Result<Vec<Answer>, StoreError>> {
        answers
            .into_iter()
            .map(|batch| batch.map(|a| a.iter().map(|a| (a.id, a.duplicate)).collect()))
            .collect()
    }

    /// A store whose database refuses events of the model `poison`, as a failing disk would.
    async fn store_refusing_poison(dir: &tempfile::TempDir) -> SqliteStore {
        let store = SqliteStore::open_for_test(dir).await;
        store.refuse_poison_for_test().await;
        store
    }

    /// Queues `batches` while another connection holds the write lock, so that the writer finds
    /// them all queued when it gets the database: they go into one transaction.
    async fn append_queued_together(
        store: &SqliteStore,
        batches: Vec<Vec<NewEvent>>,
    ) -> Vec<Result<Vec<Answer>, StoreError>> {
        let lock = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("write lock");
        let pending: Vec<PendingAppend> = batches
            .into_iter()
            .map(|batch| store.append(vec![Arc::new(batch)]))
            .collect();
        lock.rollback().await.expect("release");
        let mut answers = Vec::new();
        for answer in pending {
            answers.extend(plain(answer.await));
        }
        answers
    }

    async fn stored_models(store: &SqliteStore) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT id, model FROM events ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn batches_queued_together_commit_in_call_order_and_see_each_others_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_refusing_poison(&dir).await;
        let answers = append_queued_together(
            &store,
            vec![
                vec![event("a", Some("k1")), event("a", None)],
                vec![event("b", Some("k1")), event("b", Some("k2"))],
                vec![event("c", Some("k2"))],
            ],
        )
        .await;
        let answers: Vec<Vec<Answer>> = answers.into_iter().map(|a| a.expect("appended")).collect();
        assert_eq!(
            answers,
            [
                vec![fresh(1), fresh(2)],
                vec![duplicate(1), fresh(3)],
                vec![duplicate(3)],
            ]
        );
        assert_eq!(
            stored_models(&store).await,
            [(1, "a".into()), (2, "a".into()), (3, "b".into())]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_batch_that_fails_fails_alone_and_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_refusing_poison(&dir).await;
        let answers = append_queued_together(
            &store,
            vec![
                vec![event("a", Some("k1"))],
                vec![event("b", Some("k2")), event("poison", None)],
                vec![event("c", Some("k2"))],
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().expect("first batch"), &[fresh(1)]);
        let refused = answers[1].as_ref().expect_err("the poisoned batch fails");
        assert!(refused.to_string().contains("poison refused"), "{refused}");
        // The failed batch stored nothing, not even its key: the third batch's event is new.
        assert_eq!(answers[2].as_ref().expect("third batch"), &[fresh(2)]);
        assert_eq!(
            stored_models(&store).await,
            [(1, "a".into()), (2, "c".into())]
        );
        // Numbering goes on after the failure.
        let next = plain(store.append(vec![Arc::new(vec![event("d", None)])]).await);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].as_ref().expect("appended"), &[fresh(3)]);
        store.close().await;
    }

    /// A write of record 7 of `sale.order` at `time`, keyed as the record's version `version`.
    fn version(version: &str, time: &str) -> NewEvent {
        NewEvent {
            record_id: 7,
            timestamp: time.into(),
            dedupe_key: Some(DedupeKey::Version(version.into())),
            ..NewEvent::test_write("sale.order", None)
        }
    }

    #[tokio::test]
    async fn a_record_version_is_a_duplicate_while_it_is_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_refusing_poison(&dir).await;
        let t = "2024-01-15T10:30:00Z";
        let later = "2024-01-15T10:31:00Z";
        // In one transaction: A, a retry of A, B, A again (the record changed back within the
        // same second), a retry of that.
        let answers = append_queued_together(
            &store,
            vec![
                vec![version("A", t)],
                vec![version("A", t)],
                vec![version("B", t), version("A", t)],
                vec![version("A", t)],
            ],
        )
        .await;
        let answers: Vec<Vec<Answer>> = answers.into_iter().map(|a| a.expect("appended")).collect();
        assert_eq!(
            answers,
            [
                vec![fresh(1)],
                vec![duplicate(1)],
                vec![fresh(2), fresh(3)],
                vec![duplicate(3)],
            ]
        );
        // In later transactions: C from a later time, then B arriving late is a retry; an event
        // key is never stored twice, whatever came after it.
        let answers = append_queued_together(
            &store,
            vec![
                vec![version("C", later)],
                vec![version("B", t)],
                vec![event("x", Some("k"))],
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().expect("C"), &[fresh(4)]);
        assert_eq!(answers[1].as_ref().expect("late B"), &[duplicate(2)]);
        assert_eq!(answers[2].as_ref().expect("k"), &[fresh(5)]);
        let answers = append_queued_together(
            &store,
            vec![vec![event("x", None)], vec![event("x", Some("k"))]],
        )
        .await;
        assert_eq!(answers[1].as_ref().expect("k again"), &[duplicate(5)]);
        // After the record's deletion, a version from up to the deletion's time is an old one.
        let answers = append_queued_together(
            &store,
            vec![
                vec![NewEvent {
                    kind: EventKind::Unlink,
                    ..version("D", later)
                }],
                vec![version("C", later)],
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().expect("deletion"), &[fresh(7)]);
        assert_eq!(answers[1].as_ref().expect("C after it"), &[duplicate(4)]);
        // A version never seen before is old too when the record's newest event is later, or
        // is its deletion: posts that overtook each other, or a copy of one compaction folded.
        let answers = append_queued_together(
            &store,
            vec![
                vec![version("never seen", later)],
                vec![version("older", t)],
            ],
        )
        .await;
        assert_eq!(
            answers[0].as_ref().expect("at the deletion"),
            &[duplicate(7)]
        );
        assert_eq!(answers[1].as_ref().expect("before it"), &[duplicate(7)]);
        // A batch that stores again a version an earlier batch of its transaction stored, then
        // meets it once more, finds it at its new place (the record came back after its
        // deletion).
        let even_later = "2024-01-15T10:32:00Z";
        let answers = append_queued_together(
            &store,
            vec![
                vec![version("E", even_later)],
                vec![
                    version("F", even_later),
                    version("E", even_later),
                    version("E", even_later),
                ],
                vec![version("G", later)],
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().expect("E"), &[fresh(8)]);
        assert_eq!(
            answers[1].as_ref().expect("F, E, E"),
            &[fresh(9), fresh(10), duplicate(10)]
        );
        assert_eq!(answers[2].as_ref().expect("G, older"), &[duplicate(10)]);
        store.close().await;
    }

    /// An event of `sale.order` record `record_id`.
    fn change(record_id: i64, kind: EventKind, payload: &str) -> NewEvent {
        NewEvent {
            record_id,
            kind,
            payload: Some(payload.into()),
            ..NewEvent::test_write("sale.order", None)
        }
    }

    /// (id, record_id, kind, payload, rev) of every stored event.
    async fn stored(store: &SqliteStore) -> Vec<(i64, i64, String, String, i64)> {
        sqlx::query_as("SELECT id, record_id, kind, payload, rev FROM events ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .expect("read")
    }

    /// Runs `step` and returns what it showed its caller before committing.
    async fn shown<F, Fut>(step: F) -> (CompactStep, Compacted)
    where
        F: FnOnce(BeforeCommit) -> Fut,
        Fut: std::future::Future<Output = Result<CompactStep, StoreError>>,
    {
        let (tell, told) = std::sync::mpsc::channel();
        let done = step(Box::new(move |changes: &Compacted| {
            let _ = tell.send(Compacted {
                dropped: changes.dropped.clone(),
                rewritten: changes.rewritten.clone(),
            });
        }))
        .await
        .expect("step");
        (done, told.recv().expect("shown before the commit"))
    }

    #[tokio::test]
    async fn compaction_folds_each_record_into_its_newest_change_and_drops_old_tombstones() {
        use EventKind::{Create, Unlink, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        let events = vec![
            change(1, Create, r#"{"a":1,"b":1}"#),
            change(2, Create, r#"{"a":1}"#),
            change(1, Write, r#"{"b":2}"#),
            change(3, Create, r#"{"a":3}"#),
            change(3, Unlink, r#"{"a":3}"#),
            change(1, Write, r#"{"a":5,"b":2}"#),
            change(2, Write, r#"{"a":2}"#),
        ];
        let answers = store.append(vec![Arc::new(events)]).await;
        assert!(answers[0].is_ok(), "{answers:?}");

        // Up to id 4: record 1 (ids 1, 3) folds into 3; record 3 has only its create there.
        let (step, changes) = shown(|hook| store.compact(0, 4, hook)).await;
        assert_eq!(
            step,
            CompactStep {
                dropped: 1,
                rewritten: 1
            }
        );
        assert_eq!(changes.dropped, [1]);
        assert_eq!(changes.rewritten.len(), 1);
        assert_eq!(
            (
                changes.rewritten[0].id,
                changes.rewritten[0].kind,
                changes.rewritten[0].rev
            ),
            (3, Create, 1)
        );
        // Then the rest: record 1 (3, 6) into 6, record 3 (4, 5) into 5, record 2 (2, 7) into 7.
        let (step, changes) = shown(|hook| store.compact(4, 7, hook)).await;
        assert_eq!(
            step,
            CompactStep {
                dropped: 3,
                rewritten: 3
            }
        );
        let mut dropped = changes.dropped.clone();
        dropped.sort_unstable();
        assert_eq!(dropped, [2, 3, 4]);
        assert_eq!(
            stored(&store).await,
            [
                (5, 3, "unlink".into(), r#"{"a":3}"#.into(), 1),
                (6, 1, "create".into(), r#"{"a":5,"b":2}"#.into(), 1),
                (7, 2, "create".into(), r#"{"a":2}"#.into(), 1),
            ]
        );
        // Nothing is left to fold.
        let (step, _) = shown(|hook| store.compact(0, 7, hook)).await;
        assert_eq!(step, CompactStep::default());

        // Deletions that are their record's newest event go; the highest one is remembered.
        let (step, changes) = shown(|hook| store.drop_tombstones(0, 7, hook)).await;
        assert_eq!(
            step,
            CompactStep {
                dropped: 1,
                rewritten: 0
            }
        );
        assert_eq!(changes.dropped, [5]);
        assert_eq!(stored(&store).await.len(), 2);
        let meta = store.log_meta().await.expect("meta");
        assert_eq!(
            meta,
            crate::store::LogMeta {
                pruned_through: 0,
                compacted_through: 7,
                tombstones_checked_through: 7,
                tombstones_dropped_through: 5,
            }
        );
        // A new event takes a fresh id: ids of dropped events are never reused.
        let next = plain(
            store
                .append(vec![Arc::new(vec![change(9, Create, "{}")])])
                .await,
        );
        assert_eq!(next[0].as_ref().expect("appended"), &[fresh(8)]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_folded_history_that_began_with_the_records_creation_had_nothing_before_it() {
        use EventKind::{Create, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        let events = vec![
            change(1, Create, r#"{"user_id":5,"state":"draft"}"#),
            change(1, Write, r#"{"user_id":5,"state":"sale"}"#),
            change(1, Write, r#"{"user_id":5,"state":"done"}"#),
        ];
        let answers = store.append(vec![Arc::new(events)]).await;
        assert!(answers[0].is_ok(), "{answers:?}");
        let columns = |store: &SqliteStore| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_as::<_, (i64, Option<String>, Option<i64>)>(
                    "SELECT id, previous, folded_from FROM events ORDER BY id",
                )
                .fetch_all(&pool)
                .await
                .expect("read")
            }
        };
        assert_eq!(
            columns(&store).await,
            [
                (1, Some(String::new()), None),
                (2, Some(r#"{"state":"draft"}"#.into()), None),
                (3, Some(r#"{"state":"sale"}"#.into()), None),
            ]
        );
        let (step, _) = shown(|hook| store.compact(0, 3, hook)).await;
        assert_eq!(step.dropped, 2);
        assert_eq!(columns(&store).await, [(3, Some(String::new()), Some(1))]);
        store.close().await;
    }

    #[tokio::test]
    async fn writes_after_close_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_refusing_poison(&dir).await;
        store.close().await;
        let refused = store
            .append(vec![Arc::new(vec![event("a", None)]), Arc::new(vec![])])
            .await;
        assert_eq!(refused.len(), 2, "one answer per batch");
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, Err(StoreError::WriterStopped))),
            "{refused:?}"
        );
        // Readiness checks say so too.
        let ping = store.ping().await;
        assert!(matches!(ping, Err(StoreError::WriterStopped)), "{ping:?}");
    }

    #[tokio::test]
    async fn the_writer_syncs_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_refusing_poison(&dir).await;
        let path = dir.path().join("log.db");
        for (setting, level) in [("off", 0), ("normal", 1), ("full", 2), ("extra", 3)] {
            let conn = open(&path, setting).expect("open");
            let applied: i64 = conn
                .pragma_query_value(None, "synchronous", |row| row.get(0))
                .expect("pragma");
            assert_eq!(applied, level, "synchronous = {setting}");
        }
        store.close().await;
    }
}
