//! Appends on PostgreSQL: one task per host takes the calls in order, merges those waiting into
//! one transaction (group commit), and numbers the events under the append lock (see the
//! module above for why that keeps ids in commit order across hosts).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{APPEND_LOCK, LAST_EVENT_ID, raise_meta};
use crate::event::{DedupeKey, EventKind, NewEvent, Previous, json_string_list};
use crate::store::versions::{Newest, Verdict, judge};
use crate::store::{Appended, BatchResult, PendingAppend, StoreError};

/// Queued appends are merged into one transaction until it holds at least this many events.
const MERGE_UP_TO_EVENTS: usize = 8192;

struct Job {
    batches: Vec<Arc<Vec<NewEvent>>>,
    reply: oneshot::Sender<Vec<BatchResult>>,
}

pub(super) struct Writer {
    /// Taken by [`Writer::close`]: the task ends once the queued jobs are done.
    jobs: parking_lot::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    running: Arc<AtomicBool>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(pool: PgPool) -> Writer {
        let (jobs, queue) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let task = tokio::spawn(async move {
            run(pool, queue).await;
            flag.store(false, Ordering::SeqCst);
        });
        Writer {
            jobs: parking_lot::Mutex::new(Some(jobs)),
            running,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// See [`crate::store::EventStore::append`]: queued here and now, answered later.
    pub(super) fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend {
        let count = batches.len();
        let (reply, answer) = oneshot::channel();
        let queued = self
            .jobs
            .lock()
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { batches, reply }).is_ok());
        Box::pin(async move {
            let answer = if queued { answer.await.ok() } else { None };
            answer.unwrap_or_else(|| (0..count).map(|_| Err(StoreError::WriterStopped)).collect())
        })
    }

    /// Stops taking appends, and waits until those queued are done.
    pub(super) async fn close(&self) {
        self.jobs.lock().take();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut total: usize = first.batches.iter().map(|b| b.len()).sum();
        let mut merged = vec![first];
        while total < MERGE_UP_TO_EVENTS {
            match queue.try_recv() {
                Ok(job) => {
                    total += job.batches.iter().map(|b| b.len()).sum::<usize>();
                    merged.push(job);
                }
                Err(_) => break,
            }
        }
        let all: Vec<&[NewEvent]> = merged
            .iter()
            .flat_map(|job| job.batches.iter().map(|b| b.as_slice()))
            .collect();
        let results = match append(&pool, &all).await {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, events = total, "appending to the event log failed");
                let shared = Arc::new(e);
                all.iter()
                    .map(|_| Err(StoreError::Shared(shared.clone())))
                    .collect()
            }
        };
        drop(all);
        let mut results = results.into_iter();
        for job in merged {
            let answers: Vec<BatchResult> = results.by_ref().take(job.batches.len()).collect();
            drop(job.batches);
            let _ = job.reply.send(answers);
        }
    }
}

/// Appends the batches, in order, in one transaction under the append lock, each in a
/// savepoint of its own.
async fn append(pool: &PgPool, batches: &[&[NewEvent]]) -> Result<Vec<BatchResult>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *tx)
        .await?;
    // Read under the lock: every transaction that numbered events before has committed.
    let last: Option<i64> = sqlx::query_scalar("SELECT value FROM log_meta WHERE key = $1")
        .bind(LAST_EVENT_ID)
        .fetch_optional(&mut *tx)
        .await?;
    let mut next = last.unwrap_or(0) + 1;
    let mut results = Vec::with_capacity(batches.len());
    // Keys stored by this transaction's earlier batches.
    let mut stored_here: HashMap<&str, i64> = HashMap::new();
    for batch in batches {
        sqlx::query("SAVEPOINT batch").execute(&mut *tx).await?;
        match append_batch(&mut tx, &stored_here, next, batch).await {
            Ok(appended) => {
                sqlx::query("RELEASE SAVEPOINT batch")
                    .execute(&mut *tx)
                    .await?;
                next = appended.next;
                stored_here.extend(appended.keys);
                results.push(Ok(appended.answers));
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT batch")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT batch")
                    .execute(&mut *tx)
                    .await?;
                results.push(Err(e));
            }
        }
    }
    raise_meta(&mut tx, LAST_EVENT_ID, next - 1).await?;
    tx.commit().await?;
    Ok(results)
}

/// One batch, appended: its answers, the next free id, and the keys it stored.
struct AppendedBatch<'e> {
    answers: Vec<Appended>,
    next: i64,
    keys: HashMap<&'e str, i64>,
}

/// One batch in four statements, whatever its size: the newest events of its records, the
/// events holding its keys, the keys it moves, and one insert of every stored event. Within
/// the batch, each event sees the ones before it through the same maps the statements filled.
async fn append_batch<'e>(
    conn: &mut PgConnection,
    stored_here: &HashMap<&str, i64>,
    mut next: i64,
    batch: &'e [NewEvent],
) -> Result<AppendedBatch<'e>, StoreError> {
    let mut newest = newest_of_all(conn, batch).await?;
    let mut known = keys_of_all(conn, batch, stored_here).await?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut keys: HashMap<&str, i64> = HashMap::new();
    let mut rows = Rows::default();
    // Stored events whose key moves to a newer one: in the database, or in `rows`.
    let mut forget = Vec::new();
    for event in batch {
        let record = (event.model.as_str(), event.record_id);
        let current = newest.get(&record);
        if let Some(dedupe) = &event.dedupe_key {
            let key = dedupe.as_str();
            match judge(dedupe, known.get(key).copied(), current, event) {
                Verdict::Duplicate(id) => {
                    answers.push(Appended {
                        id,
                        duplicate: true,
                        derived: None,
                    });
                    continue;
                }
                Verdict::Store { forget: moved } => {
                    if let Some(id) = moved {
                        match rows.ids.iter().position(|&row| row == id) {
                            Some(at) => rows.keys[at] = None,
                            None => forget.push(id),
                        }
                    }
                }
            }
            keys.insert(key, next);
            known.insert(key, next);
        }
        let derived = crate::event::derive(
            current.map(|n| Previous {
                kind: n.kind,
                payload: n.payload.as_deref(),
            }),
            event.kind,
            event.payload.as_deref(),
            event.changed_fields.as_deref(),
        );
        rows.push(next, event, &derived);
        newest.insert(
            record,
            Newest {
                id: next,
                timestamp: event.timestamp.clone(),
                kind: event.kind,
                payload: event.payload.clone(),
            },
        );
        answers.push(Appended {
            id: next,
            duplicate: false,
            derived: Some(Arc::new(derived)),
        });
        next += 1;
    }
    if !forget.is_empty() {
        sqlx::query("UPDATE events SET dedupe_key = NULL WHERE id = ANY($1)")
            .bind(&forget)
            .execute(&mut *conn)
            .await?;
    }
    rows.insert(conn).await?;
    Ok(AppendedBatch {
        answers,
        next,
        keys,
    })
}

/// The columns of the events a batch stores, one array each, for one `INSERT … UNNEST`.
#[derive(Default)]
struct Rows {
    ids: Vec<i64>,
    models: Vec<String>,
    record_ids: Vec<i64>,
    kinds: Vec<&'static str>,
    timestamps: Vec<String>,
    payloads: Vec<Option<String>>,
    changed_fields: Vec<Option<String>>,
    keys: Vec<Option<String>>,
    received_at: Vec<String>,
    previous: Vec<Option<String>>,
}

impl Rows {
    fn push(&mut self, id: i64, event: &NewEvent, derived: &crate::event::Derived) {
        self.ids.push(id);
        self.models.push(event.model.clone());
        self.record_ids.push(event.record_id);
        self.kinds.push(event.kind.as_str());
        self.timestamps.push(event.timestamp.clone());
        self.payloads.push(event.payload.clone());
        self.changed_fields
            .push(derived.changed_fields.as_deref().map(json_string_list));
        self.keys
            .push(event.dedupe_key.as_ref().map(|k| k.as_str().to_string()));
        self.received_at.push(event.received_at.clone());
        self.previous
            .push(derived.prior.to_column().map(str::to_string));
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO events (id, model, record_id, kind, timestamp, payload, \
             changed_fields, dedupe_key, received_at, previous) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
        )
        .bind(&self.ids)
        .bind(&self.models)
        .bind(&self.record_ids)
        .bind(&self.kinds)
        .bind(&self.timestamps)
        .bind(&self.payloads)
        .bind(&self.changed_fields)
        .bind(&self.keys)
        .bind(&self.received_at)
        .bind(&self.previous)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The newest event of each record the batch names, as the transaction sees it.
async fn newest_of_all<'e>(
    conn: &mut PgConnection,
    batch: &'e [NewEvent],
) -> Result<HashMap<(&'e str, i64), Newest>, StoreError> {
    let mut models: Vec<&'e str> = Vec::with_capacity(batch.len());
    let mut ids: Vec<i64> = Vec::with_capacity(batch.len());
    for event in batch {
        models.push(&event.model);
        ids.push(event.record_id);
    }
    let rows = sqlx::query(
        // One probe of events_by_record per record (LATERAL), never a scan of the log.
        "SELECT r.model, r.record_id, e.id, e.timestamp, e.kind, e.payload \
         FROM (SELECT DISTINCT * FROM UNNEST($1::text[], $2::bigint[])) AS r (model, record_id) \
         CROSS JOIN LATERAL (SELECT id, timestamp, kind, payload FROM events \
             WHERE model = r.model AND record_id = r.record_id ORDER BY id DESC LIMIT 1) AS e",
    )
    .bind(&models)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    // The batch's own copies of the model names, which the map's keys borrow.
    let names: std::collections::HashSet<&'e str> = models.iter().copied().collect();
    let mut newest = HashMap::with_capacity(rows.len());
    for row in rows {
        let model: String = row.try_get("model")?;
        let record_id: i64 = row.try_get("record_id")?;
        let Some(&name) = names.get(model.as_str()) else {
            continue;
        };
        let kind: String = row.try_get("kind")?;
        newest.insert(
            (name, record_id),
            Newest {
                id: row.try_get("id")?,
                timestamp: row.try_get("timestamp")?,
                kind: kind.parse::<EventKind>().map_err(StoreError::Corrupt)?,
                payload: row.try_get("payload")?,
            },
        );
    }
    Ok(newest)
}

/// Where the log holds each of the batch's keys: this transaction's earlier batches first,
/// then the database.
async fn keys_of_all<'e>(
    conn: &mut PgConnection,
    batch: &'e [NewEvent],
    stored_here: &HashMap<&str, i64>,
) -> Result<HashMap<&'e str, i64>, StoreError> {
    let wanted: Vec<&str> = batch
        .iter()
        .filter_map(|e| e.dedupe_key.as_ref().map(DedupeKey::as_str))
        .collect();
    let mut known = HashMap::with_capacity(wanted.len());
    if wanted.is_empty() {
        return Ok(known);
    }
    let rows = sqlx::query("SELECT dedupe_key, id FROM events WHERE dedupe_key = ANY($1)")
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await?;
    let mut stored: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        stored.insert(row.try_get("dedupe_key")?, row.try_get("id")?);
    }
    for key in wanted {
        if let Some(&id) = stored_here.get(key).or_else(|| stored.get(key)) {
            known.insert(key, id);
        }
    }
    Ok(known)
}
