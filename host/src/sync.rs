//! Pull and state: what a device receives, and where it stands.
//!
//! A pull reads the log after the device's position (the one the server keeps, or the one in
//! the `sync_token` the client sent), keeps the events of the app_type's feed, and moves the
//! position past every event it scanned: those it returns and those the feed does not want. It
//! moves once the answer has been delivered ([`Delivery`]); an event stream moves it as it
//! sends each batch.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::coalesce::{AnswerEvent, coalesce};
use crate::config::RetentionMode;
use crate::error::{ApiError, ApiResult};
use crate::event::{LoggedEvent, Prior, now_rfc3339};
use crate::identity::Identity;
use crate::log::ModelFilter;
use crate::plugin::{ActivePlugin, AppFeed, CallContext, OnUpgrade, PluginFailure};
use crate::positions::{DeviceGuard, DeviceKey, DeviceState};
use crate::token::Cursor;

/// Longest device id accepted.
const MAX_DEVICE_ID_LEN: usize = 200;

/// The body of `POST /api/v2/sync/pull`, as the seed's clients send it, plus `sync_token`.
#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub user_id: i64,
    pub device_id: String,
    pub app_type: String,
    #[serde(default)]
    pub limit: Option<i64>,
    /// Resume from this earlier `next_sync_token` instead of the position the server keeps.
    #[serde(default)]
    pub sync_token: Option<String>,
    /// Send only the latest change of each record in this answer (see `coalesce`).
    #[serde(default)]
    pub coalesce: bool,
    /// When nothing new waits, hold the request up to this many seconds for an event of this
    /// feed to arrive (long-poll).
    #[serde(default)]
    pub wait: Option<f64>,
}

/// Why a device must drop its local copy and start again: from the start of a compacted log,
/// which holds every record's latest state, or from the head of a pruned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The device's position lies beyond the log's newest event: the log it was reading is not
    /// this one (the database was replaced).
    CursorAhead,
    /// Something after the device's position that it had not read was dropped by retention: a
    /// deletion kept longer than `retention.tombstone_ttl`, or, when pruning, any event. Also
    /// what a device that never pulled is told once the beginning of a pruned log is gone.
    CursorTooOld,
    /// The app_type's plugin changed since the device last pulled, and the plugin is set to
    /// `on_upgrade = "reset"`: the old version may have left out records the new one sends.
    PluginChanged,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::CursorAhead => "cursor_ahead",
            ResetReason::CursorTooOld => "cursor_too_old",
            ResetReason::PluginChanged => "plugin_changed",
        }
    }
}

pub struct PullAnswer {
    pub events: Vec<AnswerEvent>,
    pub next_sync_token: String,
    pub has_more: bool,
    pub reset: Option<ResetReason>,
    /// Where the answer leaves the device, to record once the answer has reached it.
    pub delivery: Option<Delivery>,
}

/// A device's new position after a page, held back until the page has been delivered: the
/// device stays locked meanwhile (a second pull of it waits), and when the answer is lost on
/// the way (the connection fails before it is written out), dropping this leaves the device
/// where it was, so that its next pull answers the same events.
pub struct Delivery {
    device: DeviceGuard,
    state: DeviceState,
}

impl Delivery {
    /// Records the device's new position.
    pub fn commit(self) {
        self.device.commit(self.state);
    }
}

impl PullAnswer {
    /// The 200 body: the seed's fields first, then the additive ones.
    pub fn to_json(&self) -> String {
        let events_len: usize = self.events.iter().map(|e| e.size_hint() + 1).sum();
        let mut out = String::with_capacity(160 + events_len + self.next_sync_token.len());
        let _ = write!(
            out,
            "{{\"status\":\"success\",\"has_updates\":{},\"new_events_count\":{},\"events\":[",
            !self.events.is_empty(),
            self.events.len()
        );
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            event.render(&mut out);
        }
        // Tokens are base64url: nothing in them needs escaping.
        let _ = write!(
            out,
            "],\"next_sync_token\":\"{}\",\"has_more\":{}",
            self.next_sync_token, self.has_more
        );
        if let Some(reason) = self.reset {
            let _ = write!(
                out,
                ",\"reset_required\":true,\"reset_reason\":\"{}\"",
                reason.as_str()
            );
        }
        out.push('}');
        out
    }
}

/// The answer of `GET /api/v2/sync/state`.
#[derive(Debug, Serialize)]
pub struct StateAnswer {
    pub last_sync_time: String,
    pub sync_count: i64,
    pub last_event_id: i64,
    pub app_type: String,
    pub pending_events: u64,
    /// Whether the device's next pull will tell it to start over, and why.
    pub reset_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_reason: Option<&'static str>,
}

fn check_device_id(device_id: &str) -> ApiResult<()> {
    if device_id.trim().is_empty() || device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(ApiError::invalid_field(
            "device_id",
            format!("must be 1 to {MAX_DEVICE_ID_LEN} characters"),
        ));
    }
    Ok(())
}

/// Nobody reads another user's feed or state.
fn check_user(identity: &Identity, user_id: i64) -> ApiResult<()> {
    if identity.uid != user_id {
        return Err(ApiError::forbidden(
            "user_mismatch",
            format!("this session belongs to another user than user_id {user_id}"),
        ));
    }
    Ok(())
}

/// A page of a feed: what to send, and where it leaves the device.
#[derive(Default)]
struct Page {
    events: Vec<AnswerEvent>,
    scanned_to: i64,
    has_more: bool,
    /// Events the page should hold were pruned while it was read (see [`Scan::pruned`]).
    ///
    /// [`Scan::pruned`]: crate::log::Scan::pruned
    pruned: bool,
    /// A deletion after the page's start was dropped while it was read (see
    /// [`Scan::tombstone_lost`]).
    ///
    /// [`Scan::tombstone_lost`]: crate::log::Scan::tombstone_lost
    tombstone_lost: bool,
}

fn limit_of(app: &App, requested: Option<i64>) -> ApiResult<usize> {
    let sync = &app.config.sync;
    let limit = match requested {
        None => sync.default_limit,
        Some(limit) if limit < 1 => {
            return Err(ApiError::invalid_field("limit", "must be at least 1"));
        }
        Some(limit) => limit.min(sync.max_limit),
    };
    Ok(usize::try_from(limit).unwrap_or(1))
}

pub async fn pull(app: &App, identity: &Identity, request: PullRequest) -> ApiResult<PullAnswer> {
    check_user(identity, request.user_id)?;
    check_device_id(&request.device_id)?;
    app.feed(&request.app_type)?;
    let limit = limit_of(app, request.limit)?;
    let wait = wait_of(app, request.wait)?;
    let key = DeviceKey {
        user_id: request.user_id,
        device_id: request.device_id,
        app_type: request.app_type,
    };
    let mut cursor = DeviceCursor::new(app, identity, key, request.sync_token.as_deref())?;
    cursor.limit = limit;
    cursor.coalesce = request.coalesce;
    cursor
        .next(app, Some(tokio::time::Instant::now() + wait))
        .await
}

/// A device reading its feed page after page: a pull is one page, a stream many.
pub struct DeviceCursor {
    key: DeviceKey,
    identity: Identity,
    /// Where to read from next, when not the position the server keeps (a token's, or what a
    /// waiting read scanned past).
    start: Option<Cursor>,
    pub limit: usize,
    pub coalesce: bool,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl DeviceCursor {
    /// A cursor at `sync_token` when given, else at the position the server keeps.
    pub fn new(
        app: &App,
        identity: &Identity,
        key: DeviceKey,
        sync_token: Option<&str>,
    ) -> ApiResult<DeviceCursor> {
        let start = match sync_token {
            Some(token) => Some(verify_token(app, &key, token)?),
            None => None,
        };
        Ok(DeviceCursor {
            limit: usize::try_from(app.config.sync.default_limit).unwrap_or(100),
            key,
            identity: identity.clone(),
            start,
            coalesce: false,
            stopping: app.stopping.subscribe(),
        })
    }

    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Reads the next page and moves the device past it. When nothing waits, waits for a
    /// commit of the feed's models until `deadline` (forever when `None`) or shutdown, then
    /// answers what there is, maybe nothing.
    pub async fn next(
        &mut self,
        app: &App,
        deadline: Option<tokio::time::Instant>,
    ) -> ApiResult<PullAnswer> {
        loop {
            // Resolved again each time round: plugins.toml may change while a pull waits.
            let feed = app.feed(&self.key.app_type)?;
            // Only a pull that may wait listens for commits: a plain pull pays nothing for it.
            let may_wait =
                deadline.is_none_or(|d| tokio::time::Instant::now() < d) && !self.stopping();
            let changes = may_wait.then(|| app.log.changes(feed_models(&feed).as_deref()));
            let armed = changes.as_ref().map(|c| c.arm());
            let device = app
                .positions
                .lock(self.key.clone())
                .await
                .map_err(ApiError::internal)?;
            let known = self.start.or_else(|| device.state().map(cursor_of));
            // Boxed: reading a page takes far more state than waiting does, and a waiting pull
            // would otherwise hold room for it (as part of this future) for as long as it waits.
            let mut read = Box::pin(read_feed(
                app,
                &self.identity,
                &feed,
                device.key(),
                known,
                self.limit,
            ))
            .await?;
            let nothing_yet =
                read.page.events.is_empty() && !read.page.has_more && read.reset.is_none();
            let time_left = deadline.is_none_or(|d| tokio::time::Instant::now() < d);
            if let Some(armed) = armed
                && nothing_yet
                && time_left
                && !self.stopping()
            {
                // Wait without holding the device or the empty page: carry on from what was
                // scanned.
                self.start = Some(read.cursor());
                drop(read);
                drop(device);
                let until = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = armed.wait() => {}
                    () = until => {}
                    () = crate::util::stopped(&mut self.stopping) => {}
                }
                continue;
            }
            if self.coalesce {
                let position = known.map_or(0, |k| k.position);
                let mark = read.tombstone_mark;
                read.page.events = coalesce(std::mem::take(&mut read.page.events), position, mark);
            }
            let now = now_rfc3339();
            let (sync_count, first_sync_time) = match device.state() {
                Some(old) => (old.sync_count + 1, old.first_sync_time.clone()),
                None => (1, now.clone()),
            };
            let cursor = read.cursor();
            let state = DeviceState {
                position: cursor.position,
                sync_count,
                first_sync_time,
                last_sync_time: now,
                feed_epoch: cursor.epoch,
                tombstone_mark: cursor.tombstone_mark,
            };
            // From here on the device's kept position is where to read, once the answer's
            // delivery is committed.
            self.start = None;
            let mut answer = read.into_answer(app);
            answer.delivery = Some(Delivery { device, state });
            return Ok(answer);
        }
    }
}

/// Checks a stream's request: the caller's own device, a known app_type.
pub fn check_stream(app: &App, identity: &Identity, key: &DeviceKey) -> ApiResult<()> {
    check_user(identity, key.user_id)?;
    check_device_id(&key.device_id)?;
    app.feed(&key.app_type)?;
    Ok(())
}

/// How long a pull may wait for events, capped by `sync.max_wait_secs`.
fn wait_of(app: &App, requested: Option<f64>) -> ApiResult<std::time::Duration> {
    match requested {
        None => Ok(std::time::Duration::ZERO),
        Some(secs) if !secs.is_finite() || secs < 0.0 => Err(ApiError::invalid_field(
            "wait",
            "must be a number of seconds, 0 or more",
        )),
        Some(secs) => Ok(std::time::Duration::from_secs_f64(
            secs.min(app.config.sync.max_wait_secs as f64),
        )),
    }
}

/// The models a feed reads; `None` is every model.
fn feed_models(feed: &AppFeed) -> Option<Vec<String>> {
    match feed {
        AppFeed::Models(models) => Some(models.models.clone()),
        AppFeed::Plugin(active) => {
            let models = &active.plugin.manifest.models;
            (!models.is_empty()).then(|| models.clone())
        }
    }
}

/// What a device would receive, read without moving it: `smartsync plugin replay`. Starts at
/// `sync_token` when given, else at the device's position, else at the beginning.
pub async fn replay(
    app: &App,
    identity: &Identity,
    key: DeviceKey,
    sync_token: Option<&str>,
    limit: Option<i64>,
) -> ApiResult<PullAnswer> {
    check_device_id(&key.device_id)?;
    let feed = app.feed(&key.app_type)?;
    let limit = limit_of(app, limit)?;
    let known = match sync_token {
        Some(token) => Some(verify_token(app, &key, token)?),
        None => app
            .positions
            .peek(&key)
            .await
            .map_err(ApiError::internal)?
            .map(|s| cursor_of(&s)),
    };
    let read = read_feed(app, identity, &feed, &key, known, limit).await?;
    Ok(read.into_answer(app))
}

fn verify_token(app: &App, key: &DeviceKey, token: &str) -> ApiResult<Cursor> {
    app.tokens
        .verify(key, token)
        .map_err(|e| ApiError::bad_request("invalid_sync_token", e.to_string()))
}

/// Where a device's kept state says it is.
fn cursor_of(state: &DeviceState) -> Cursor {
    Cursor {
        position: state.position,
        epoch: state.feed_epoch,
        tombstone_mark: state.tombstone_mark,
    }
}

/// A page read for a device, not yet answered.
struct FeedRead {
    page: Page,
    reset: Option<ResetReason>,
    feed_epoch: u64,
    /// See [`Cursor::tombstone_mark`].
    tombstone_mark: i64,
    key: DeviceKey,
}

impl FeedRead {
    /// Where the page leaves the device.
    fn cursor(&self) -> Cursor {
        Cursor {
            position: self.page.scanned_to,
            epoch: self.feed_epoch,
            tombstone_mark: self.tombstone_mark,
        }
    }

    fn into_answer(self, app: &App) -> PullAnswer {
        let next_sync_token = app.tokens.issue(&self.key, self.cursor());
        PullAnswer {
            events: self.page.events,
            next_sync_token,
            has_more: self.page.has_more,
            reset: self.reset,
            delivery: None,
        }
    }
}

/// Reads the next page of `feed` for the device at `known` (position and feed version), or
/// decides that the device must reset.
async fn read_feed(
    app: &App,
    identity: &Identity,
    feed: &AppFeed,
    key: &DeviceKey,
    known: Option<Cursor>,
    limit: usize,
) -> ApiResult<FeedRead> {
    let start = known.map_or(0, |k| k.position);
    let feed_epoch = feed_epoch_of(feed);
    // Read before the page. A device that begins reading the log now cannot hold the records
    // of the deletions compaction has passed: their histories are folded into them already.
    // One dropped while the page is read is caught by the scan.
    let compacted = app.log.compacted_through();
    // The device's mark for this page: a device that begins reading the log now takes today's.
    let mark_now = match known {
        Some(k) if start > app.log.pruned_through() => k.tombstone_mark,
        _ => compacted,
    };
    let reset = reset_due(app, Some(feed), known);
    let page = match (reset, feed) {
        (Some(_), _) => Page::default(),
        (None, AppFeed::Models(models)) => {
            let scan = app
                .log
                .scan(
                    start,
                    Some(models.models.as_slice()),
                    limit,
                    app.config.sync.scan_window,
                )
                .await
                .map_err(ApiError::internal)?;
            Page {
                events: scan.events.into_iter().map(AnswerEvent::Logged).collect(),
                scanned_to: scan.scanned_to,
                has_more: scan.has_more,
                pruned: scan.pruned,
                tombstone_lost: scan.tombstone_lost,
            }
        }
        (None, AppFeed::Plugin(active)) => {
            let ctx = CallContext {
                user_id: identity.uid,
                device_id: key.device_id.clone(),
                app_type: key.app_type.clone(),
                company_ids: identity.company_ids.clone(),
                lang: identity.lang.clone(),
                tz: identity.tz.clone(),
            };
            plugin_page(app, active, &ctx, start, mark_now, limit).await?
        }
    };
    // A page that events were pruned from under is no page: the device starts over. So is
    // one that a deletion was dropped from under, for a device that may hold records.
    let mark = known.map_or(0, |k| k.tombstone_mark);
    let lost = page.pruned || (page.tombstone_lost && holds_records(app, start, mark));
    let reset = reset.or(lost.then_some(ResetReason::CursorTooOld));
    let (page, tombstone_mark) = match reset {
        Some(_) => (restart(app), app.log.compacted_through()),
        None if start <= app.log.pruned_through() => (page, compacted),
        None => (page, mark),
    };
    Ok(FeedRead {
        page,
        reset,
        feed_epoch,
        tombstone_mark,
        key: key.clone(),
    })
}

/// Whether a device at `start` may hold records of deletions that compaction dropped: one at
/// the start of what the log keeps has read nothing of it (it never pulled, or it was reset),
/// and one that began reading when compaction had passed the deletions (up to `mark`, see
/// [`Cursor::tombstone_mark`]) cannot hold their records.
fn holds_records(app: &App, start: i64, mark: i64) -> bool {
    start > app.log.pruned_through() && mark < app.log.tombstones_dropped_through()
}

/// Where a device that must start over goes, with no events. A compacted log holds every
/// record's latest state: the device reads it from the start. A pruned one does not: the
/// device goes to its head, and its copy must come from elsewhere.
fn restart(app: &App) -> Page {
    let head = app.log.head();
    match app.config.retention.mode {
        RetentionMode::Compact => {
            let start = app.log.pruned_through().min(head);
            Page {
                scanned_to: start,
                has_more: start < head,
                ..Page::default()
            }
        }
        RetentionMode::Prune => Page {
            scanned_to: head,
            ..Page::default()
        },
    }
}

/// The version of the plugin shaping `feed` (0: none).
fn feed_epoch_of(feed: &AppFeed) -> u64 {
    match feed {
        AppFeed::Plugin(active) => active.plugin.epoch,
        AppFeed::Models(_) => 0,
    }
}

/// Whether a device at `known` (position and feed version; `None`: it never pulled) must start
/// over before reading `feed` (`None`: a feed switched off, with no plugin to compare).
fn reset_due(app: &App, feed: Option<&AppFeed>, known: Option<Cursor>) -> Option<ResetReason> {
    let Cursor {
        position: start,
        epoch: start_epoch,
        tombstone_mark,
    } = known.unwrap_or_default();
    if start > app.log.head() {
        Some(ResetReason::CursorAhead)
    } else if start < app.log.pruned_through()
        || (holds_records(app, start, tombstone_mark)
            && start < app.log.tombstones_dropped_through())
    {
        Some(ResetReason::CursorTooOld)
    } else if let Some(feed @ AppFeed::Plugin(active)) = feed
        && active.on_upgrade == OnUpgrade::Reset
        && known.is_some()
        && start_epoch != feed_epoch_of(feed)
    {
        Some(ResetReason::PluginChanged)
    } else {
        None
    }
}

/// The smallest chunk read for a plugin call: fewer calls when the plugin drops most events.
const MIN_PLUGIN_CHUNK: usize = 64;

fn plugin_failed(failure: PluginFailure) -> ApiError {
    ApiError::unavailable("plugin_failed", failure.to_string(), 5).with_kind(failure.kind.as_str())
}

/// Fills a page through the plugin: reads past `start` in chunks (only the models the plugin
/// asked for), has the plugin shape each chunk, and stops at `limit` shaped events, the end of
/// the log, or the scan budget. The page ends past every event read, including those the plugin
/// dropped; when the plugin kept more than fit, it ends at the last one sent.
async fn plugin_page(
    app: &App,
    active: &ActivePlugin,
    ctx: &CallContext,
    start: i64,
    mark: i64,
    limit: usize,
) -> ApiResult<Page> {
    let plugin = &active.plugin;
    let models: ModelFilter<'_> = if plugin.manifest.models.is_empty() {
        None
    } else {
        Some(plugin.manifest.models.as_slice())
    };
    let budget = usize::try_from(app.config.sync.scan_window).unwrap_or(usize::MAX);
    // Allocated as shaped events arrive: most pulls of an up-to-date device find nothing.
    let mut page = Page {
        scanned_to: start,
        ..Page::default()
    };
    let mut scanned = 0usize;
    loop {
        let want = limit - page.events.len();
        let position = page.scanned_to;
        let chunk = app
            .log
            .scan(
                page.scanned_to,
                models,
                want.max(MIN_PLUGIN_CHUNK),
                app.config.sync.scan_window,
            )
            .await
            .map_err(ApiError::internal)?;
        if chunk.pruned {
            page.pruned = true;
            return Ok(page);
        }
        // Whether it matters (the device may hold records) is for the caller to say: a device
        // that holds nothing reads on.
        page.tombstone_lost |= chunk.tombstone_lost;
        if chunk.events.is_empty() {
            page.scanned_to = chunk.scanned_to;
            page.has_more = chunk.has_more;
            return Ok(page);
        }
        scanned += chunk.events.len();
        // The device will have read the page's earlier chunks too.
        let events = as_seen_from(chunk.events, position, mark);
        let shaped = plugin.answer(ctx, &events).await.map_err(plugin_failed)?;
        let fits = shaped.len() <= want;
        page.events.reserve(shaped.len().min(want));
        for (source, shaped) in shaped.into_iter().take(want) {
            page.scanned_to = source.event.id;
            page.events.push(AnswerEvent::Shaped { source, shaped });
        }
        if !fits {
            page.has_more = true;
            return Ok(page);
        }
        page.scanned_to = chunk.scanned_to;
        if page.events.len() >= limit || !chunk.has_more {
            page.has_more = chunk.has_more;
            return Ok(page);
        }
        if scanned >= budget {
            page.has_more = true;
            return Ok(page);
        }
    }
}

/// Marks the revision of an event whose prior a device at its position cannot rely on.
const BLIND: u32 = 1 << 31;

/// `events` as a device at `position` sees them, which began reading the log when compaction
/// had gone up to `mark`: an event that compaction folded a history into, which the device may
/// have read part of, has an unknown prior for it (what it holds of the record cannot be told).
/// Such an event is another revision of it, so that answers kept for the two are kept apart.
fn as_seen_from(events: Vec<Arc<LoggedEvent>>, position: i64, mark: i64) -> Vec<Arc<LoggedEvent>> {
    let blind = |e: &LoggedEvent| {
        e.event
            .folded
            .is_some_and(|f| f.may_have_been_read(position, mark))
    };
    if !events.iter().any(|e| blind(e)) {
        return events;
    }
    events
        .into_iter()
        .map(|e| {
            if blind(&e) && e.event.prior != Prior::Unknown {
                let mut event = e.event.clone();
                event.prior = Prior::Unknown;
                event.rev |= BLIND;
                LoggedEvent::new(event)
            } else {
                e
            }
        })
        .collect()
}

pub async fn state(
    app: &App,
    identity: &Identity,
    user_id: i64,
    device_id: String,
    app_type: Option<String>,
) -> ApiResult<StateAnswer> {
    check_user(identity, user_id)?;
    check_device_id(&device_id)?;
    let candidates: Vec<String> = match app_type {
        Some(app_type) => {
            app.feed(&app_type)?;
            vec![app_type]
        }
        None => app.app_types(),
    };
    // Without an app_type, the one this device synced most recently.
    let mut found: Option<(String, DeviceState)> = None;
    for app_type in candidates {
        let key = DeviceKey {
            user_id,
            device_id: device_id.clone(),
            app_type: app_type.clone(),
        };
        if let Some(state) = app.positions.peek(&key).await.map_err(ApiError::internal)?
            && found
                .as_ref()
                .is_none_or(|(_, best)| state.last_sync_time > best.last_sync_time)
        {
            found = Some((app_type, state));
        }
    }
    let (app_type, state) = found.ok_or_else(|| {
        ApiError::not_found(
            "unknown_device",
            format!("device {device_id:?} of user {user_id} has never pulled"),
        )
    })?;
    // Events the app_type's feed reads after the position (before a plugin's own filtering).
    let feed = app.feed(&app_type);
    let models = match &feed {
        Ok(feed) => feed_models(feed),
        // Switched off since: what waits is what the log holds.
        Err(_) => None,
    };
    let pending_events = app
        .log
        .count_after(state.position, models.as_deref())
        .await
        .map_err(ApiError::internal)?;
    let reset = reset_due(app, feed.as_ref().ok(), Some(cursor_of(&state)));
    Ok(StateAnswer {
        last_sync_time: state.last_sync_time,
        sync_count: state.sync_count,
        last_event_id: state.position,
        app_type,
        pending_events,
        reset_required: reset.is_some(),
        reset_reason: reset.map(ResetReason::as_str),
    })
}
