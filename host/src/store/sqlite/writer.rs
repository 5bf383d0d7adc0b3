//! The one connection that writes, on a thread of its own.
//!
//! Every write to the SQLite file (appends, pruning, device positions) runs here, in the order
//! it was asked for, on one connection that keeps its statements prepared. A group of appends
//! therefore costs one hand-off between threads and one transaction of single-row statements
//! that SQLite has already compiled, and the server's writers never wait for each other inside
//! SQLite's busy handler. Reads stay on the sqlx pool: in WAL mode they never wait for this
//! connection, and they see each transaction once it has committed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::event::NewEvent;
use crate::positions::{DeviceKey, DeviceState};
use crate::store::{Appended, StoreError};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Append {
        events: Arc<Vec<NewEvent>>,
        reply: Reply<Vec<Appended>>,
    },
    Prune {
        through: i64,
        reply: Reply<u64>,
    },
    SaveDevices {
        devices: Vec<(DeviceKey, DeviceState)>,
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
}

impl Writer {
    /// Opens a connection to the database at `path`, whose schema must be in place, and starts
    /// the thread that owns it.
    pub(super) fn start(path: &Path, synchronous: &str) -> Result<Writer, StoreError> {
        let conn = open(path, synchronous)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, &queue))
            .map_err(|e| StoreError::Setup(format!("cannot start the database writer: {e}")))?;
        Ok(Writer { jobs })
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// See [`crate::store::EventStore::append`]. The writer lets go of `events` before it
    /// answers, so the caller holds the only reference again afterwards.
    pub(super) async fn append(
        &self,
        events: Arc<Vec<NewEvent>>,
    ) -> Result<Vec<Appended>, StoreError> {
        self.call(|reply| Job::Append { events, reply }).await
    }

    pub(super) async fn prune(&self, through: i64) -> Result<u64, StoreError> {
        self.call(|reply| Job::Prune { through, reply }).await
    }

    pub(super) async fn save_devices(
        &self,
        devices: Vec<(DeviceKey, DeviceState)>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Job::SaveDevices { devices, reply }).await
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

fn run(mut conn: Connection, queue: &mpsc::Receiver<Job>) {
    // The next id to assign, once read: only this thread appends, so it stays true until a
    // transaction fails, when it is read again.
    let mut next_id: Option<i64> = None;
    while let Ok(job) = queue.recv() {
        match job {
            Job::Append { events, reply } => {
                let result = append(&mut conn, &mut next_id, &events);
                if result.is_err() {
                    next_id = None;
                }
                drop(events);
                let _ = reply.send(result);
            }
            Job::Prune { through, reply } => {
                let _ = reply.send(prune(&mut conn, through));
            }
            Job::SaveDevices { devices, reply } => {
                let _ = reply.send(save_devices(&mut conn, &devices));
            }
            Job::Close { done } => {
                if let Err((_, e)) = conn.close() {
                    tracing::error!(error = %e, "closing the database writer's connection");
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

/// The highest id ever assigned: sqlite_sequence remembers it even after its row was pruned.
pub(super) const LAST_EVENT_ID: &str = "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence \
     WHERE name = 'events'), 0), COALESCE((SELECT MAX(id) FROM events), 0)) AS last";

fn append(
    conn: &mut Connection,
    next_id: &mut Option<i64>,
    events: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut next = match *next_id {
        Some(id) => id,
        None => tx.query_row(LAST_EVENT_ID, [], |row| row.get::<_, i64>(0))? + 1,
    };
    let mut answers = Vec::with_capacity(events.len());
    {
        let mut lookup = tx.prepare_cached("SELECT id FROM events WHERE dedupe_key = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, model, record_id, kind, timestamp, payload, \
             changed_fields, dedupe_key, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        // Keys first stored by this transaction: not in the table yet for `lookup` to find.
        let mut stored_here: HashMap<&str, i64> = HashMap::new();
        for event in events {
            if let Some(key) = event.dedupe_key.as_deref() {
                let known = match stored_here.get(key) {
                    Some(&id) => Some(id),
                    None => lookup
                        .query_row([key], |row| row.get::<_, i64>(0))
                        .optional()?,
                };
                if let Some(id) = known {
                    answers.push(Appended {
                        id,
                        duplicate: true,
                    });
                    continue;
                }
                stored_here.insert(key, next);
            }
            let changed_fields = match &event.changed_fields {
                Some(fields) => Some(
                    serde_json::to_string(fields)
                        .map_err(|e| StoreError::Corrupt(format!("changed_fields: {e}")))?,
                ),
                None => None,
            };
            insert.execute(params![
                next,
                event.model,
                event.record_id,
                event.kind.as_str(),
                event.timestamp,
                event.payload,
                changed_fields,
                event.dedupe_key,
                event.received_at,
            ])?;
            answers.push(Appended {
                id: next,
                duplicate: false,
            });
            next += 1;
        }
    }
    tx.commit()?;
    *next_id = Some(next);
    Ok(answers)
}

fn prune(conn: &mut Connection, through: i64) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = tx.execute("DELETE FROM events WHERE id <= ?1", [through])?;
    tx.execute(
        "INSERT INTO log_meta (key, value) VALUES ('pruned_through', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        [through],
    )?;
    tx.commit()?;
    Ok(deleted as u64)
}

fn save_devices(
    conn: &mut Connection,
    devices: &[(DeviceKey, DeviceState)],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO devices (user_id, device_id, app_type, position, sync_count, \
             first_sync_time, last_sync_time, feed_epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (user_id, device_id, app_type) DO UPDATE SET \
             position = excluded.position, sync_count = excluded.sync_count, \
             last_sync_time = excluded.last_sync_time, feed_epoch = excluded.feed_epoch",
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
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}
