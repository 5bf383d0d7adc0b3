//! The event log as the rest of the server sees it: one writer, many readers.
//!
//! Appends go through a single writer task. It gathers whatever has queued up into one group and
//! hands it to the store without waiting for the group before it; the store commits the groups
//! queued with it together (group commit), so many concurrent webhooks share a transaction
//! instead of each paying for one. Only after the commit does the writer publish a group's events
//! to the in-memory tail and move the head, in the order the groups were handed over, and only
//! then does it answer the appenders: a reader never sees an event that is not durable, and ids
//! appear in commit order.
//!
//! The tail holds the newest events with their wire form pre-rendered, so that a device that is
//! up to date, the common case, is answered without touching the database.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Poll;

use parking_lot::RwLock;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::event::{Event, LoggedEvent, NewEvent};
use crate::store::{
    Appended, BatchResult, CompactStep, Compacted, EventStore, PendingAppend, StoreError,
};

/// Which models a reader wants; `None` is every model.
pub type ModelFilter<'a> = Option<&'a [String]>;

fn wants(filter: ModelFilter<'_>, model: &str) -> bool {
    filter.is_none_or(|models| models.iter().any(|m| m == model))
}

/// What one scan of the log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Matching events, in id order.
    pub events: Vec<Arc<LoggedEvent>>,
    /// Every event with an id up to here was either returned or did not match.
    pub scanned_to: i64,
    /// More matching events, or events not yet scanned, wait after `scanned_to`.
    pub has_more: bool,
    /// Events after the scan's start were pruned before it could read them: the scan may have a
    /// hole, and the reader must start over.
    pub pruned: bool,
    /// A deletion after the scan's start was dropped (see [`EventLog::tombstones_dropped_through`]):
    /// a reader that holds records may have missed it, and must start over.
    pub tombstone_lost: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct TailLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

struct Tail {
    /// Every event with an id above `floor` is in `events`.
    floor: i64,
    /// The newest id committed, which compaction may since have dropped.
    head: i64,
    events: VecDeque<Arc<LoggedEvent>>,
    bytes: usize,
    limits: TailLimits,
}

impl Tail {
    fn head(&self) -> i64 {
        self.head
    }

    fn push(&mut self, entry: Arc<LoggedEvent>) {
        self.head = self.head.max(entry.event.id);
        self.bytes += entry.weight();
        self.events.push_back(entry);
        while self.events.len() > 1
            && (self.events.len() > self.limits.max_events || self.bytes > self.limits.max_bytes)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.weight();
                self.floor = old.event.id;
            }
        }
    }

    /// Forgets the events with an id up to `through` (at most the head).
    fn drop_through(&mut self, through: i64) {
        // Taken first: with every event dropped, the head is what the floor must become.
        let head = self.head();
        while let Some(front) = self.events.front() {
            if front.event.id > through {
                break;
            }
            self.bytes -= front.weight();
            self.events.pop_front();
        }
        self.floor = self.floor.max(through.min(head));
    }

    /// Takes in what a step of compaction changed: dropped events go, rewritten ones replace
    /// their old selves.
    fn apply(&mut self, changes: &Compacted) {
        let floor = self.floor;
        if changes.dropped.iter().any(|&id| id > floor) {
            let dropped: std::collections::HashSet<i64> = changes.dropped.iter().copied().collect();
            let mut freed = 0;
            self.events.retain(|e| {
                let keep = !dropped.contains(&e.event.id);
                if !keep {
                    freed += e.weight();
                }
                keep
            });
            self.bytes -= freed;
        }
        for event in changes.rewritten.iter().filter(|e| e.id > floor) {
            let at = self.start(event.id - 1);
            if let Some(slot) = self.events.get_mut(at)
                && slot.event.id == event.id
            {
                let new = LoggedEvent::new(event.clone());
                self.bytes = self.bytes - slot.weight() + new.weight();
                *slot = new;
            }
        }
    }

    /// Index of the first event with an id above `after`.
    fn start(&self, after: i64) -> usize {
        self.events.partition_point(|e| e.event.id <= after)
    }
}

type Reply = oneshot::Sender<BatchResult>;

struct AppendRequest {
    events: Vec<NewEvent>,
    reply: Reply,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the event log is shutting down")]
    Closed,
}

struct Shared {
    store: Arc<dyn EventStore>,
    tail: RwLock<Tail>,
    head: watch::Sender<i64>,
    wakeups: Wakeups,
    /// Every event with an id up to this one may have been pruned. Raised before events are
    /// deleted, so that a reader who checks it after reading knows whether it may have missed one.
    pruned_through: AtomicI64,
    /// Every event up to this id had its record's older changes folded into it.
    compacted_through: AtomicI64,
    /// Deletions up to this id were looked at for dropping.
    tombstones_checked_through: AtomicI64,
    /// The newest deletion dropped; raised before it is deleted, like `pruned_through`.
    tombstones_dropped_through: AtomicI64,
}

/// Whom to wake when events are committed: long-polling pulls wait on the models they read, so
/// a commit wakes only the waiters that could care about it.
#[derive(Default)]
struct Wakeups {
    by_model: parking_lot::Mutex<HashMap<String, Arc<Notify>>>,
    /// Waiters that read every model.
    any: Arc<Notify>,
}

impl Wakeups {
    fn notifiers(&self, models: ModelFilter<'_>) -> Vec<Arc<Notify>> {
        match models {
            None => vec![self.any.clone()],
            Some(models) => {
                let mut by_model = self.by_model.lock();
                models
                    .iter()
                    .map(|m| by_model.entry(m.clone()).or_default().clone())
                    .collect()
            }
        }
    }

    fn wake(&self, models: &[&str]) {
        {
            let by_model = self.by_model.lock();
            for model in models {
                if let Some(notify) = by_model.get(*model) {
                    notify.notify_waiters();
                }
            }
        }
        self.any.notify_waiters();
    }
}

/// A subscription to commits of some models.
pub struct Changes {
    notifies: Vec<Arc<Notify>>,
}

impl Changes {
    /// Starts listening: commits from now on are caught, even before [`Armed::wait`] is called.
    /// Arm before reading the log, so that a commit between the read and the wait is not missed.
    pub fn arm(&self) -> Armed<'_> {
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = self
            .notifies
            .iter()
            .map(|n| Box::pin(n.notified()))
            .collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        Armed { waits }
    }
}

/// A listening subscription.
pub struct Armed<'a> {
    waits: Vec<Pin<Box<tokio::sync::futures::Notified<'a>>>>,
}

impl Armed<'_> {
    /// Resolves at the first commit of one of the models since [`Changes::arm`].
    pub async fn wait(mut self) {
        std::future::poll_fn(|cx| {
            // Poll every one, so that each holds this task's waker.
            let mut ready = false;
            for wait in &mut self.waits {
                ready |= wait.as_mut().poll(cx).is_ready();
            }
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

pub struct EventLog {
    shared: Arc<Shared>,
    writer: mpsc::Sender<AppendRequest>,
    writer_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl EventLog {
    /// Loads the newest events into memory and starts the writer.
    pub async fn open(
        store: Arc<dyn EventStore>,
        limits: TailLimits,
        group_max_events: usize,
    ) -> Result<EventLog, StoreError> {
        let last = store.last_event_id().await?;
        let meta = store.log_meta().await?;
        let newest = store.newest(limits.max_events).await?;
        // The newest events, unless the newest ids were dropped (a deletion dropped by
        // compaction, events pruned): then nothing above the last id is, and reads go to the
        // store. The head stays the last id committed, where devices may be.
        let whole = newest.last().is_some_and(|e| e.id == last);
        let mut tail = Tail {
            floor: match newest.first() {
                Some(first) if whole => first.id - 1,
                _ => last,
            },
            head: last,
            events: VecDeque::with_capacity(if whole { newest.len() } else { 0 }),
            bytes: 0,
            limits,
        };
        if whole {
            for event in newest {
                tail.push(LoggedEvent::new(event));
            }
        }
        let head = tail.head();
        let shared = Arc::new(Shared {
            store,
            tail: RwLock::new(tail),
            head: watch::Sender::new(head),
            wakeups: Wakeups::default(),
            pruned_through: AtomicI64::new(meta.pruned_through),
            compacted_through: AtomicI64::new(meta.compacted_through),
            tombstones_checked_through: AtomicI64::new(meta.tombstones_checked_through),
            tombstones_dropped_through: AtomicI64::new(meta.tombstones_dropped_through),
        });
        let (writer, requests) = mpsc::channel(4096);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_writer(
            shared.clone(),
            requests,
            stopped,
            group_max_events.max(1),
        ));
        Ok(EventLog {
            shared,
            writer,
            writer_task: parking_lot::Mutex::new(Some(task)),
            stop,
        })
    }

    /// Appends one atomic batch; answers once it is durable and visible to readers.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(AppendRequest { events, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        Ok(answer.await.map_err(|_| AppendError::Closed)??)
    }

    /// The id of the newest committed event.
    pub fn head(&self) -> i64 {
        *self.shared.head.borrow()
    }

    /// Every event with an id up to this one may have been pruned: a reader positioned before it
    /// cannot be brought up to date event by event. Check it after reading, not before: pruning
    /// raises it first and deletes afterwards.
    pub fn pruned_through(&self) -> i64 {
        self.shared.pruned_through.load(Ordering::SeqCst)
    }

    /// Prunes the events with an id up to `through` (at most the head), `batch` at a time, each
    /// batch its own short transaction so that appends never wait long. Returns how many events
    /// were deleted.
    pub async fn prune_through(&self, through: i64, batch: u64) -> Result<u64, StoreError> {
        let through = through.min(self.head());
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut deleted = 0;
        loop {
            let floor = self.pruned_through();
            if floor >= through {
                return Ok(deleted);
            }
            let next = through.min(floor.saturating_add(batch));
            // Published before anything is deleted: a read that misses a deleted event sees,
            // when it checks afterwards, that its position is older than what is kept.
            self.shared.pruned_through.fetch_max(next, Ordering::SeqCst);
            self.shared.tail.write().drop_through(next);
            deleted += self.shared.store.prune(next).await?;
            // Appends queued meanwhile commit between two batches (the store's writer takes
            // jobs in order); yielding lets this task's neighbours run too.
            tokio::task::yield_now().await;
        }
    }

    /// The highest id, `after` or above, such that it and every event between `after` and it
    /// were received before `cutoff`.
    pub async fn received_before(&self, after: i64, cutoff: &str) -> Result<i64, StoreError> {
        self.shared.store.received_before(after, cutoff).await
    }

    /// Every event up to this id had its record's older changes folded into it.
    pub fn compacted_through(&self) -> i64 {
        self.shared.compacted_through.load(Ordering::SeqCst)
    }

    /// Deletions up to this id were looked at for dropping.
    pub fn tombstones_checked_through(&self) -> i64 {
        self.shared
            .tombstones_checked_through
            .load(Ordering::SeqCst)
    }

    /// The newest deletion compaction dropped (0: none): a reader positioned before it may
    /// have missed a deletion of a record it holds. Check it after reading, not before: it is
    /// raised first and the deletion dropped afterwards.
    pub fn tombstones_dropped_through(&self) -> i64 {
        self.shared
            .tombstones_dropped_through
            .load(Ordering::SeqCst)
    }

    /// Compacts the log up to `through` (at most the head), `batch` ids at a time, each step
    /// its own short transaction: every record's changes up to there are folded into its newest
    /// one ([`crate::event::fold`]), and the older ones dropped. Readers see each step whole:
    /// the in-memory tail takes the step's changes before the store commits them.
    pub async fn compact_through(
        &self,
        through: i64,
        batch: u64,
    ) -> Result<CompactStep, StoreError> {
        let through = through.min(self.head());
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut done = CompactStep::default();
        loop {
            let from = self.compacted_through();
            if from >= through {
                return Ok(done);
            }
            let next = through.min(from.saturating_add(batch));
            let shared = self.shared.clone();
            let step = self
                .shared
                .store
                .compact(
                    from,
                    next,
                    Box::new(move |changes| shared.tail.write().apply(changes)),
                )
                .await?;
            self.shared
                .compacted_through
                .fetch_max(next, Ordering::SeqCst);
            done.dropped += step.dropped;
            done.rewritten += step.rewritten;
            tokio::task::yield_now().await;
        }
    }

    /// Drops the deletions up to `through` (at most what compaction has passed) that are still
    /// their record's newest event, `batch` ids at a time, each step its own transaction.
    /// Returns how many events were dropped.
    pub async fn drop_tombstones_through(
        &self,
        through: i64,
        batch: u64,
    ) -> Result<u64, StoreError> {
        let through = through.min(self.compacted_through());
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut dropped = 0;
        loop {
            let from = self.tombstones_checked_through();
            if from >= through {
                return Ok(dropped);
            }
            let next = through.min(from.saturating_add(batch));
            let shared = self.shared.clone();
            let step = self
                .shared
                .store
                .drop_tombstones(
                    from,
                    next,
                    Box::new(move |changes| {
                        // Published before the deletions commit: a read that misses one sees,
                        // when it checks afterwards, that it may have.
                        if let Some(&newest) = changes.dropped.iter().max() {
                            shared
                                .tombstones_dropped_through
                                .fetch_max(newest, Ordering::SeqCst);
                        }
                        shared.tail.write().apply(changes);
                    }),
                )
                .await?;
            self.shared
                .tombstones_checked_through
                .fetch_max(next, Ordering::SeqCst);
            dropped += step.dropped;
            tokio::task::yield_now().await;
        }
    }

    /// A subscription to commits of `models` (every model when `None`).
    pub fn changes(&self, models: ModelFilter<'_>) -> Changes {
        Changes {
            notifies: self.shared.wakeups.notifiers(models),
        }
    }

    /// A receiver that changes whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.shared.head.subscribe()
    }

    /// Reads up to `limit` events of `models` after `after`, from memory when the tail reaches
    /// back that far, else from the store, scanning at most `window` ids there. A scan that
    /// starts before [`EventLog::pruned_through`] says so in [`Scan::pruned`].
    pub async fn scan(
        &self,
        after: i64,
        models: ModelFilter<'_>,
        limit: usize,
        window: i64,
    ) -> Result<Scan, StoreError> {
        let mut scan = self.scan_unchecked(after, models, limit, window).await?;
        // Pruning publishes its floor before it deletes: checked after reading, this catches a
        // read that a delete overtook. The same goes for dropped deletions.
        scan.pruned = after < self.pruned_through();
        scan.tombstone_lost = after < self.tombstones_dropped_through();
        Ok(scan)
    }

    async fn scan_unchecked(
        &self,
        after: i64,
        models: ModelFilter<'_>,
        limit: usize,
        window: i64,
    ) -> Result<Scan, StoreError> {
        let head = {
            let tail = self.shared.tail.read();
            let head = tail.head();
            if after >= head {
                return Ok(Scan {
                    scanned_to: after,
                    ..Scan::default()
                });
            }
            if after >= tail.floor {
                return Ok(scan_memory(&tail, after, models, limit));
            }
            head
        };
        let upto = head.min(after.saturating_add(window.max(1)));
        let rows = self
            .shared
            .store
            .read_after(after, upto, models, limit + 1)
            .await?;
        let full = rows.len() > limit;
        let events: Vec<Arc<LoggedEvent>> =
            rows.into_iter().take(limit).map(LoggedEvent::new).collect();
        let scanned_to = match (full, events.last()) {
            (true, Some(last)) => last.event.id,
            _ => upto,
        };
        Ok(Scan {
            events,
            scanned_to,
            has_more: full || upto < head,
            ..Scan::default()
        })
    }

    /// How many events of `models` lie after `after`.
    pub async fn count_after(
        &self,
        after: i64,
        models: ModelFilter<'_>,
    ) -> Result<u64, StoreError> {
        {
            let tail = self.shared.tail.read();
            if after >= tail.floor {
                let start = tail.start(after);
                return Ok(tail
                    .events
                    .range(start..)
                    .filter(|e| wants(models, &e.event.model))
                    .count() as u64);
            }
        }
        self.shared.store.count_after(after, models).await
    }

    /// Stops taking appends, commits what is queued, and waits for the writer to finish.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.writer_task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "event log writer ended abnormally");
        }
    }
}

fn scan_memory(tail: &Tail, after: i64, models: ModelFilter<'_>, limit: usize) -> Scan {
    let mut scan = Scan {
        events: Vec::with_capacity(limit.min(256)),
        scanned_to: after,
        ..Scan::default()
    };
    for entry in tail.events.range(tail.start(after)..) {
        if wants(models, &entry.event.model) {
            if scan.events.len() == limit {
                scan.has_more = true;
                return scan;
            }
            scan.events.push(entry.clone());
        }
        scan.scanned_to = entry.event.id;
    }
    scan
}

/// Groups handed to the store and not yet answered, at most. The store commits the groups
/// queued with it together, so this bounds what waits there, not how much shares a commit.
const GROUPS_IN_FLIGHT: usize = 256;

/// A group of append requests handed to the store, waiting for its answer.
struct InFlight {
    answer: PendingAppend,
    /// Each request's events: one batch each, so that one request's failure is never another's.
    batches: Vec<Arc<Vec<NewEvent>>>,
    replies: Vec<Reply>,
}

/// Hands groups of appends to the store as they arrive, without waiting for the previous one
/// to commit, and publishes each group once the store answers it, in the order they were
/// handed over: that is commit order, so ids reach readers in order.
async fn run_writer(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<AppendRequest>,
    mut stop: watch::Receiver<bool>,
    group_max_events: usize,
) {
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // Whether appends may still arrive, and whether they are refused from now on.
    let mut open = true;
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            () = crate::util::stopped(&mut stop), if !stopping => {
                // Refuse new appends; the ones already queued are still committed.
                stopping = true;
                requests.close();
            }
            results = oldest_answer(&mut in_flight), if !in_flight.is_empty() => {
                if let Some(done) = in_flight.pop_front() {
                    publish(&shared, done, results);
                }
            }
            request = requests.recv(), if open && in_flight.len() < GROUPS_IN_FLIGHT => {
                let Some(first) = request else {
                    open = false;
                    continue;
                };
                let mut queued = first.events.len();
                let mut group = vec![first];
                while queued < group_max_events {
                    match requests.try_recv() {
                        Ok(request) => {
                            queued += request.events.len();
                            group.push(request);
                        }
                        Err(_) => break,
                    }
                }
                let (batches, replies): (Vec<_>, Vec<_>) = group
                    .into_iter()
                    .map(|request| (Arc::new(request.events), request.reply))
                    .unzip();
                in_flight.push_back(InFlight {
                    answer: shared.store.append(batches.clone()),
                    batches,
                    replies,
                });
            }
            // Nothing queued, nothing in flight, and nothing more can arrive.
            else => break,
        }
    }
}

/// The answer to the oldest group in flight.
fn oldest_answer(
    in_flight: &mut VecDeque<InFlight>,
) -> impl Future<Output = Vec<BatchResult>> + '_ {
    std::future::poll_fn(move |cx| match in_flight.front_mut() {
        Some(oldest) => oldest.answer.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// Makes a group's committed events visible to readers, then answers its requests.
fn publish(shared: &Shared, done: InFlight, results: Vec<BatchResult>) {
    let mut results = results.into_iter();
    let mut answered = Vec::with_capacity(done.replies.len());
    let mut entries: Vec<Arc<LoggedEvent>> = Vec::new();
    for (events, reply) in done.batches.into_iter().zip(done.replies) {
        let result = results.next().unwrap_or_else(|| {
            Err(StoreError::Corrupt(
                "the store answered fewer batches than it was given".into(),
            ))
        });
        match result {
            Ok(answers) => {
                // The store lets go of the events before it answers; copied only if it did not.
                let events = Arc::try_unwrap(events).unwrap_or_else(|kept| kept.as_ref().clone());
                // Rendered before taking the lock, so that readers wait only for the pushes.
                entries.extend(
                    events
                        .into_iter()
                        .zip(&answers)
                        .filter(|(_, answer)| !answer.duplicate)
                        .map(|(event, answer)| {
                            let mut event = Event::from_new(answer.id, event);
                            // As the store keeps it: with what it derived from the history.
                            if let Some(derived) = &answer.derived {
                                event.prior = derived.prior.clone();
                                event.changed_fields = derived.changed_fields.clone();
                            }
                            LoggedEvent::new(event)
                        }),
                );
                answered.push((reply, answers));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
    let mut touched: Vec<String> = Vec::new();
    for entry in &entries {
        if !touched.contains(&entry.event.model) {
            touched.push(entry.event.model.clone());
        }
    }
    let head = {
        let mut tail = shared.tail.write();
        for entry in entries {
            tail.push(entry);
        }
        tail.head()
    };
    shared.head.send_if_modified(|current| {
        let moved = *current != head;
        *current = head;
        moved
    });
    let touched: Vec<&str> = touched.iter().map(String::as_str).collect();
    shared.wakeups.wake(&touched);
    for (reply, answers) in answered {
        let _ = reply.send(Ok(answers));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SqliteStore;

    fn new_event(model: &str) -> NewEvent {
        NewEvent::test_write(model, None)
    }

    /// The SQLite store, with reads held at a gate until the test opens it.
    struct GatedStore {
        inner: SqliteStore,
        entered: Notify,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl EventStore for GatedStore {
        fn append(&self, batches: Vec<Arc<Vec<NewEvent>>>) -> PendingAppend {
            self.inner.append(batches)
        }
        async fn last_event_id(&self) -> Result<i64, StoreError> {
            self.inner.last_event_id().await
        }
        async fn read_after(
            &self,
            after: i64,
            upto: i64,
            models: Option<&[String]>,
            limit: usize,
        ) -> Result<Vec<Event>, StoreError> {
            self.entered.notify_one();
            let _pass = self.gate.acquire().await;
            self.inner.read_after(after, upto, models, limit).await
        }
        async fn count_after(
            &self,
            after: i64,
            models: Option<&[String]>,
        ) -> Result<u64, StoreError> {
            self.inner.count_after(after, models).await
        }
        async fn newest(&self, n: usize) -> Result<Vec<Event>, StoreError> {
            self.inner.newest(n).await
        }
        async fn log_meta(&self) -> Result<crate::store::LogMeta, StoreError> {
            self.inner.log_meta().await
        }
        async fn received_before(&self, after: i64, cutoff: &str) -> Result<i64, StoreError> {
            self.inner.received_before(after, cutoff).await
        }
        async fn compact(
            &self,
            after: i64,
            through: i64,
            before_commit: crate::store::BeforeCommit,
        ) -> Result<CompactStep, StoreError> {
            self.inner.compact(after, through, before_commit).await
        }
        async fn drop_tombstones(
            &self,
            after: i64,
            through: i64,
            before_commit: crate::store::BeforeCommit,
        ) -> Result<CompactStep, StoreError> {
            self.inner
                .drop_tombstones(after, through, before_commit)
                .await
        }
        async fn prune(&self, through: i64) -> Result<u64, StoreError> {
            self.inner.prune(through).await
        }
        async fn record_heads(
            &self,
            model: &str,
            after: i64,
            limit: usize,
        ) -> Result<Vec<crate::store::RecordHead>, StoreError> {
            self.inner.record_heads(model, after, limit).await
        }
        async fn record_heads_of(
            &self,
            model: &str,
            ids: &[i64],
        ) -> Result<Vec<crate::store::RecordHead>, StoreError> {
            self.inner.record_heads_of(model, ids).await
        }
        async fn sources(&self) -> Result<Vec<(String, String)>, StoreError> {
            self.inner.sources().await
        }
        async fn save_source(&self, name: &str, state: &str) -> Result<(), StoreError> {
            self.inner.save_source(name, state).await
        }
        async fn load_device(
            &self,
            key: &crate::positions::DeviceKey,
        ) -> Result<Option<crate::positions::DeviceState>, StoreError> {
            self.inner.load_device(key).await
        }
        async fn save_devices(
            &self,
            devices: &[(crate::positions::DeviceKey, crate::positions::DeviceState)],
        ) -> Result<(), StoreError> {
            self.inner.save_devices(devices).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn close(&self) {
            self.inner.close().await
        }
    }

    #[tokio::test]
    async fn a_scan_overtaken_by_pruning_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = SqliteStore::open_for_test(&dir).await;
        let store = Arc::new(GatedStore {
            inner,
            entered: Notify::new(),
            gate: tokio::sync::Semaphore::new(0),
        });
        // A two-event tail: older events are read from the store.
        let limits = TailLimits {
            max_events: 2,
            max_bytes: 1 << 20,
        };
        let log = Arc::new(
            EventLog::open(store.clone(), limits, 100)
                .await
                .expect("log"),
        );
        log.append((0..20).map(|_| new_event("sale.order")).collect())
            .await
            .expect("append");

        // A scan from 5 is held inside the store while events up to 10 are pruned.
        let reader = {
            let log = log.clone();
            tokio::spawn(async move { log.scan(5, None, 5, 1000).await })
        };
        store.entered.notified().await;
        assert_eq!(log.prune_through(10, 3).await.expect("prune"), 10);
        store.gate.add_permits(100);
        let overtaken = reader.await.expect("reader").expect("scan");
        assert_eq!(overtaken.events.first().map(|e| e.event.id), Some(11));
        assert!(overtaken.pruned, "a scan with a hole in it was not flagged");

        // From the new floor on, nothing is missing.
        let fine = log.scan(10, None, 5, 1000).await.expect("scan");
        assert!(!fine.pruned);
        assert_eq!(fine.events.first().map(|e| e.event.id), Some(11));
        log.close().await;
    }

    #[tokio::test]
    async fn compaction_reaches_the_tail_and_deletions_dropped_show_in_scans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        let limits = TailLimits {
            max_events: 100,
            max_bytes: 1 << 20,
        };
        let log = EventLog::open(Arc::new(store), limits, 100)
            .await
            .expect("log");
        let change = |record_id: i64, kind: crate::event::EventKind| NewEvent {
            record_id,
            kind,
            ..new_event("sale.order")
        };
        use crate::event::EventKind::{Create, Unlink, Write};
        log.append(vec![
            change(1, Create),
            change(2, Create),
            change(1, Write),
            change(2, Unlink),
            change(3, Create),
        ])
        .await
        .expect("append");
        let ids_and_kinds = |scan: &Scan| -> Vec<(i64, crate::event::EventKind, u32)> {
            scan.events
                .iter()
                .map(|e| (e.event.id, e.event.kind, e.event.rev))
                .collect()
        };

        let step = log.compact_through(100, 2).await.expect("compact");
        assert_eq!((step.dropped, step.rewritten), (2, 2));
        assert_eq!(log.compacted_through(), 5, "at most the head");
        // Read from memory: the tail took the changes in.
        let scan = log.scan(0, None, 10, 100).await.expect("scan");
        assert_eq!(
            ids_and_kinds(&scan),
            [(3, Create, 1), (4, Unlink, 1), (5, Create, 0)]
        );
        assert!(!scan.tombstone_lost);

        assert_eq!(log.drop_tombstones_through(5, 2).await.expect("drop"), 1);
        assert_eq!(log.tombstones_dropped_through(), 4);
        let scan = log.scan(0, None, 10, 100).await.expect("scan");
        assert_eq!(ids_and_kinds(&scan), [(3, Create, 1), (5, Create, 0)]);
        assert!(
            scan.tombstone_lost,
            "a read from before the deletion may have missed it"
        );
        assert!(
            !log.scan(4, None, 10, 100)
                .await
                .expect("scan")
                .tombstone_lost
        );
        log.close().await;
    }

    #[test]
    fn a_tail_pruned_empty_keeps_its_head() {
        let mut tail = Tail {
            floor: 0,
            head: 0,
            events: VecDeque::new(),
            bytes: 0,
            limits: TailLimits {
                max_events: 10,
                max_bytes: 1 << 20,
            },
        };
        for id in 1..=3 {
            tail.push(LoggedEvent::new(Event::from_new(
                id,
                new_event("sale.order"),
            )));
        }
        tail.drop_through(2);
        assert_eq!((tail.floor, tail.head(), tail.events.len()), (2, 3, 1));
        tail.drop_through(3);
        assert_eq!((tail.floor, tail.head(), tail.events.len()), (3, 3, 0));
    }

    #[tokio::test]
    async fn a_commit_wakes_only_the_waiters_of_its_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        let limits = TailLimits {
            max_events: 100,
            max_bytes: 1 << 20,
        };
        let log = EventLog::open(Arc::new(store), limits, 100)
            .await
            .expect("log");
        let pickings = [String::from("stock.picking")];
        let for_pickings = log.changes(Some(&pickings));
        let for_everything = log.changes(None);
        let picking_waiter = for_pickings.arm();
        let any_waiter = for_everything.arm();

        log.append(vec![new_event("sale.order")])
            .await
            .expect("append");
        let mut picking_waiter = Box::pin(picking_waiter.wait());
        let short = Duration::from_millis(100);
        assert!(
            tokio::time::timeout(short, &mut picking_waiter)
                .await
                .is_err(),
            "an order woke a waiter of pickings"
        );
        tokio::time::timeout(short, any_waiter.wait())
            .await
            .expect("an order wakes a waiter of every model");

        log.append(vec![new_event("stock.picking")])
            .await
            .expect("append");
        tokio::time::timeout(short, picking_waiter)
            .await
            .expect("a picking wakes a waiter of pickings");
        log.close().await;
    }

    #[tokio::test]
    async fn a_request_that_fails_fails_alone_and_the_others_are_published_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_for_test(&dir).await;
        store.refuse_poison_for_test().await;
        let limits = TailLimits {
            max_events: 100,
            max_bytes: 1 << 20,
        };
        let log = Arc::new(
            EventLog::open(Arc::new(store), limits, 100)
                .await
                .expect("log"),
        );
        // On this single-threaded runtime the three requests are all queued before the writer
        // task runs, so it takes them as one group: the failing one shares a transaction with
        // the others.
        let requests: Vec<_> = [
            vec![new_event("sale.order")],
            vec![new_event("res.partner"), new_event("poison")],
            vec![new_event("stock.picking")],
        ]
        .into_iter()
        .map(|events| {
            let log = log.clone();
            tokio::spawn(async move { log.append(events).await })
        })
        .collect();
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.expect("task"));
        }
        let ids = |answer: &Result<Vec<Appended>, AppendError>| -> Vec<i64> {
            answer
                .as_ref()
                .expect("appended")
                .iter()
                .map(|a| a.id)
                .collect()
        };
        assert_eq!(ids(&answers[0]), [1]);
        assert!(
            matches!(&answers[1], Err(AppendError::Store(e)) if e.to_string().contains("poison refused")),
            "{:?}",
            answers[1]
        );
        assert_eq!(ids(&answers[2]), [2]);
        let scan = log.scan(0, None, 10, 100).await.expect("scan");
        let stored: Vec<(i64, &str)> = scan
            .events
            .iter()
            .map(|e| (e.event.id, e.event.model.as_str()))
            .collect();
        assert_eq!(stored, [(1, "sale.order"), (2, "stock.picking")]);
        assert_eq!(log.head(), 2);
        log.close().await;
    }
}
