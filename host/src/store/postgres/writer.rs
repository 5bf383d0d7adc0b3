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

async fn append_batch<'e>(
    conn: &mut PgConnection,
    stored_here: &HashMap<&str, i64>,
    mut next: i64,
    batch: &'e [NewEvent],
) -> Result<AppendedBatch<'e>, StoreError> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut keys: HashMap<&str, i64> = HashMap::new();
    for event in batch {
        let newest = newest_of(conn, event).await?;
        if let Some(dedupe) = &event.dedupe_key {
            let key = dedupe.as_str();
            let known = match keys.get(key).or_else(|| stored_here.get(key)) {
                Some(&id) => Some(id),
                None => {
                    sqlx::query_scalar("SELECT id FROM events WHERE dedupe_key = $1")
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?
                }
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
                        sqlx::query("UPDATE events SET dedupe_key = NULL WHERE id = $1")
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
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
        sqlx::query(
            "INSERT INTO events (id, model, record_id, kind, timestamp, payload, \
             changed_fields, dedupe_key, received_at, previous) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(next)
        .bind(&event.model)
        .bind(event.record_id)
        .bind(event.kind.as_str())
        .bind(&event.timestamp)
        .bind(&event.payload)
        .bind(changed_fields)
        .bind(event.dedupe_key.as_ref().map(DedupeKey::as_str))
        .bind(&event.received_at)
        .bind(derived.prior.to_column())
        .execute(&mut *conn)
        .await?;
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

async fn newest_of(
    conn: &mut PgConnection,
    event: &NewEvent,
) -> Result<Option<Newest>, StoreError> {
    let row = sqlx::query(
        "SELECT id, timestamp, kind, payload FROM events WHERE model = $1 AND record_id = $2 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(&event.model)
    .bind(event.record_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        let kind: String = row.try_get("kind")?;
        Ok(Newest {
            id: row.try_get("id")?,
            timestamp: row.try_get("timestamp")?,
            kind: kind.parse::<EventKind>().map_err(StoreError::Corrupt)?,
            payload: row.try_get("payload")?,
        })
    })
    .transpose()
}
