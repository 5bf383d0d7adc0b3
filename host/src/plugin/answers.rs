//! Answers a plugin gave, kept so that later pulls reuse them instead of calling it again.
//!
//! Only for plugins that allow it (`answers-depend-on` in the contract): such a plugin promises
//! that its answer for an event depends on nothing but the event, its config, the app_type and
//! the context fields it names. An answer is then reused by every call to the same loaded
//! plugin (so the same build and config) whose context agrees on those fields: its [`Scope`].
//!
//! Answers are kept per event, in blocks of [`BLOCK`] consecutive log ids; past the memory
//! budget, the blocks used longest ago are dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::{CallContext, ContextField, Shaped, ShapedPayload};
use crate::event::LoggedEvent;

/// Log ids per block.
const BLOCK: i64 = 64;

/// What a block costs besides its answers.
const BLOCK_OVERHEAD: usize = std::mem::size_of::<Block>()
    + BLOCK as usize * std::mem::size_of::<Option<(u32, Answer)>>()
    + 32;

/// An event as a plugin shaped it, rendered once for the wire.
#[derive(Debug)]
pub struct ShapedWire {
    pub payload: ShapedPayload,
    pub data: Option<String>,
    /// The record left the user's feed: sent as an `unlink` with `"reason": "left_feed"`.
    pub removal: bool,
    /// The event's JSON as the client receives it.
    pub wire: Box<str>,
}

impl ShapedWire {
    pub fn new(source: &LoggedEvent, shaped: Shaped) -> ShapedWire {
        let Shaped {
            payload,
            data,
            removal,
            ..
        } = shaped;
        let wire = if removal {
            source.event.left_feed_wire_json(data.as_deref())
        } else {
            source.event.wire_json_with(
                payload.resolve(source.event.payload.as_deref()),
                data.as_deref(),
            )
        }
        .into_boxed_str();
        ShapedWire {
            payload,
            data,
            removal,
            wire,
        }
    }

    /// The payload the client receives, given the event's stored one.
    pub fn resolve<'a>(&'a self, stored: Option<&'a str>) -> Option<&'a str> {
        if self.removal {
            None
        } else {
            self.payload.resolve(stored)
        }
    }

    fn weight(&self) -> usize {
        let replaced = match &self.payload {
            ShapedPayload::Replace(json) => json.len(),
            ShapedPayload::Keep | ShapedPayload::Drop => 0,
        };
        std::mem::size_of::<ShapedWire>()
            + self.wire.len()
            + self.data.as_ref().map_or(0, String::len)
            + replaced
    }
}

/// What a plugin answered for one event.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The device does not receive it.
    Dropped,
    /// The device receives it, shaped so.
    Sent(Arc<ShapedWire>),
}

impl Answer {
    fn weight(&self) -> usize {
        match self {
            Answer::Dropped => 0,
            // Counted whole, though pulls in flight may share it.
            Answer::Sent(shaped) => shaped.weight(),
        }
    }
}

/// The part of a call's context that a plugin's answers depend on; `None`: a field they do
/// not depend on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    app_type: String,
    user_id: Option<i64>,
    device_id: Option<String>,
    company_ids: Option<Vec<i64>>,
    lang: Option<Option<String>>,
    tz: Option<Option<String>>,
}

impl Scope {
    fn weight(&self) -> usize {
        std::mem::size_of::<Scope>()
            + 64
            + self.app_type.len()
            + self.device_id.as_ref().map_or(0, String::len)
            + self.company_ids.as_ref().map_or(0, |c| c.len() * 8)
            + self.lang.iter().flatten().map(String::len).sum::<usize>()
            + self.tz.iter().flatten().map(String::len).sum::<usize>()
    }
}

/// The answers of one loaded plugin.
pub struct AnswerCache {
    depends_on: Vec<ContextField>,
    max_bytes: usize,
    inner: Mutex<Inner>,
    reused: AtomicU64,
    shaped: AtomicU64,
}

#[derive(Default)]
struct Inner {
    scopes: HashMap<Scope, HashMap<i64, Block>>,
    bytes: usize,
    /// Counts lookups and stores: a block's `used` is the count when it was last touched.
    clock: u64,
}

struct Block {
    /// Each answer with the revision of the event it was given for (see
    /// [`crate::event::Event::rev`]): an answer for an older revision is stale.
    answers: Box<[Option<(u32, Answer)>]>,
    bytes: usize,
    used: u64,
}

/// How the cache of one plugin is doing, for the admin status.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerCacheView {
    /// The context fields answers are shared by.
    pub depends_on: Vec<ContextField>,
    /// Memory held, roughly, and the budget.
    pub bytes: usize,
    pub max_bytes: usize,
    /// Distinct contexts (as far as answers depend on them) with answers kept.
    pub scopes: usize,
    /// Events answered from the cache, and events the plugin was called for.
    pub events_reused: u64,
    pub events_shaped: u64,
}

fn block_of(id: i64) -> (i64, usize) {
    // rem_euclid of a positive BLOCK is in 0..BLOCK.
    (id.div_euclid(BLOCK), id.rem_euclid(BLOCK) as usize)
}

impl AnswerCache {
    pub fn new(depends_on: Vec<ContextField>, max_bytes: usize) -> AnswerCache {
        AnswerCache {
            depends_on,
            max_bytes,
            inner: Mutex::new(Inner::default()),
            reused: AtomicU64::new(0),
            shaped: AtomicU64::new(0),
        }
    }

    /// The scope of a call in `ctx`. A device id is the client's name for its device, unique
    /// per user only, so a scope with the device id has the user id too.
    pub fn scope(&self, ctx: &CallContext) -> Scope {
        let has = |field: ContextField| self.depends_on.contains(&field);
        Scope {
            app_type: ctx.app_type.clone(),
            user_id: (has(ContextField::UserId) || has(ContextField::DeviceId))
                .then_some(ctx.user_id),
            device_id: has(ContextField::DeviceId).then(|| ctx.device_id.clone()),
            company_ids: has(ContextField::CompanyIds).then(|| ctx.company_ids.clone()),
            lang: has(ContextField::Lang).then(|| ctx.lang.clone()),
            tz: has(ContextField::Tz).then(|| ctx.tz.clone()),
        }
    }

    /// The answers kept for `events` in `scope`, one per event: `None` where none is kept.
    pub fn get(&self, scope: &Scope, events: &[Arc<LoggedEvent>]) -> Vec<Option<Answer>> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let Some(blocks) = inner.scopes.get_mut(scope) else {
            return vec![None; events.len()];
        };
        events
            .iter()
            .map(|e| {
                let (block, slot) = block_of(e.event.id);
                let block = blocks.get_mut(&block)?;
                block.used = now;
                match &block.answers[slot] {
                    Some((rev, answer)) if *rev == e.event.rev => Some(answer.clone()),
                    _ => None,
                }
            })
            .collect()
    }

    /// Counts `events` answered from the cache.
    pub fn count_reused(&self, events: usize) {
        self.reused.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Keeps `answers` ((event id, revision), answer) for `scope`; an answer kept already for
    /// the same revision stays.
    pub fn put(&self, scope: &Scope, answers: impl IntoIterator<Item = ((i64, u32), Answer)>) {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        let mut added = 0usize;
        let mut inner_freed = 0usize;
        let mut count = 0u64;
        let blocks = match inner.scopes.get_mut(scope) {
            Some(blocks) => blocks,
            None => {
                added += scope.weight();
                inner.scopes.entry(scope.clone()).or_default()
            }
        };
        for ((id, rev), answer) in answers {
            count += 1;
            let (block, slot) = block_of(id);
            let block = blocks.entry(block).or_insert_with(|| {
                added += BLOCK_OVERHEAD;
                Block {
                    answers: vec![None; BLOCK as usize].into_boxed_slice(),
                    bytes: BLOCK_OVERHEAD,
                    used: now,
                }
            });
            block.used = now;
            let slot = &mut block.answers[slot];
            if slot.as_ref().is_none_or(|(kept, _)| *kept != rev) {
                let weight = answer.weight();
                if let Some((_, stale)) = slot.take() {
                    // Not counted in `added`, which only grows: taken off here.
                    let freed = stale.weight();
                    block.bytes -= freed;
                    inner_freed += freed;
                }
                block.bytes += weight;
                added += weight;
                *slot = Some((rev, answer));
            }
        }
        inner.bytes = (inner.bytes + added).saturating_sub(inner_freed);
        if inner.bytes > self.max_bytes {
            inner.evict(self.max_bytes / 4 * 3);
        }
        drop(inner);
        self.shaped.fetch_add(count, Ordering::Relaxed);
    }

    pub fn view(&self) -> AnswerCacheView {
        let inner = self.inner.lock();
        AnswerCacheView {
            depends_on: self.depends_on.clone(),
            bytes: inner.bytes,
            max_bytes: self.max_bytes,
            scopes: inner.scopes.len(),
            events_reused: self.reused.load(Ordering::Relaxed),
            events_shaped: self.shaped.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    /// Drops the blocks used longest ago until at most `target` bytes are held, and the
    /// scopes left without blocks.
    fn evict(&mut self, target: usize) {
        let mut by_age: Vec<(u64, Scope, i64)> = self
            .scopes
            .iter()
            .flat_map(|(scope, blocks)| {
                blocks
                    .iter()
                    .map(move |(&id, block)| (block.used, scope.clone(), id))
            })
            .collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        for (_, scope, id) in by_age {
            if self.bytes <= target {
                break;
            }
            let Some(blocks) = self.scopes.get_mut(&scope) else {
                continue;
            };
            if let Some(block) = blocks.remove(&id) {
                self.bytes = self.bytes.saturating_sub(block.bytes);
            }
            if blocks.is_empty() {
                self.scopes.remove(&scope);
                self.bytes = self.bytes.saturating_sub(scope.weight());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};

    fn event(id: i64) -> Arc<LoggedEvent> {
        LoggedEvent::new(Event {
            id,
            model: "sale.order".into(),
            record_id: id,
            kind: EventKind::Write,
            timestamp: "2024-01-15T10:30:00Z".into(),
            received_at: "2024-01-15T10:30:00Z".into(),
            rev: 0,
            prior: crate::event::Prior::Unknown,
            folded: None,
            payload: Some(format!(r#"{{"id":{id},"name":"{}"}}"#, "x".repeat(200))),
            changed_fields: None,
        })
    }

    fn ctx(user_id: i64, company_ids: Vec<i64>) -> CallContext {
        CallContext {
            user_id,
            device_id: format!("device-{user_id}"),
            app_type: "manager_app".into(),
            company_ids,
            lang: None,
            tz: None,
        }
    }

    fn sent(e: &LoggedEvent) -> Answer {
        Answer::Sent(Arc::new(ShapedWire::new(
            e,
            Shaped {
                id: e.event.id,
                payload: ShapedPayload::Keep,
                data: None,
                removal: false,
            },
        )))
    }

    fn kept(answers: &[Option<Answer>]) -> Vec<&'static str> {
        answers
            .iter()
            .map(|a| match a {
                None => "unknown",
                Some(Answer::Dropped) => "dropped",
                Some(Answer::Sent(_)) => "sent",
            })
            .collect()
    }

    #[test]
    fn answers_are_shared_by_contexts_that_agree_on_the_declared_fields_only() {
        let cache = AnswerCache::new(vec![ContextField::CompanyIds], 1 << 20);
        let events: Vec<_> = (1..=3).map(event).collect();
        let alice = cache.scope(&ctx(5, vec![1]));
        cache.put(
            &alice,
            [((1, 0), sent(&events[0])), ((2, 0), Answer::Dropped)],
        );

        // Another user and device of the same companies reuses them; event 3 is unknown.
        let bob = cache.scope(&ctx(6, vec![1]));
        assert_eq!(
            kept(&cache.get(&bob, &events)),
            ["sent", "dropped", "unknown"]
        );
        // Other companies: nothing is shared.
        let other = cache.scope(&ctx(5, vec![1, 2]));
        assert_eq!(kept(&cache.get(&other, &events)), ["unknown"; 3]);
        // Another app_type: nothing is shared.
        let mut elsewhere = ctx(5, vec![1]);
        elsewhere.app_type = "other_app".into();
        assert_eq!(
            kept(&cache.get(&cache.scope(&elsewhere), &events)),
            ["unknown"; 3]
        );

        let view = cache.view();
        assert_eq!((view.scopes, view.events_shaped), (1, 2));
    }

    #[test]
    fn an_answer_for_an_earlier_revision_of_an_event_is_not_reused() {
        let cache = AnswerCache::new(Vec::new(), 1 << 20);
        let scope = cache.scope(&ctx(5, vec![1]));
        cache.put(&scope, [((1, 0), Answer::Dropped)]);
        let mut rewritten = event(1).event.clone();
        rewritten.rev = 1;
        let rewritten = [LoggedEvent::new(rewritten)];
        assert_eq!(kept(&cache.get(&scope, &rewritten)), ["unknown"]);
        cache.put(&scope, [((1, 1), sent(&rewritten[0]))]);
        assert_eq!(kept(&cache.get(&scope, &rewritten)), ["sent"]);
        assert_eq!(kept(&cache.get(&scope, &[event(1)])), ["unknown"]);
    }

    #[test]
    fn a_device_scoped_cache_keeps_users_apart_too() {
        let cache = AnswerCache::new(vec![ContextField::DeviceId], 1 << 20);
        let (mut five, mut six) = (ctx(5, vec![1]), ctx(6, vec![1]));
        five.device_id = "phone".into();
        six.device_id = "phone".into();
        cache.put(&cache.scope(&five), [((1, 0), Answer::Dropped)]);
        assert_eq!(
            kept(&cache.get(&cache.scope(&six), &[event(1)])),
            ["unknown"]
        );
    }

    #[test]
    fn a_user_scoped_cache_keeps_users_apart() {
        let cache = AnswerCache::new(vec![ContextField::UserId], 1 << 20);
        let events = [event(1)];
        cache.put(&cache.scope(&ctx(5, vec![1])), [((1, 0), Answer::Dropped)]);
        assert_eq!(
            kept(&cache.get(&cache.scope(&ctx(6, vec![1])), &events)),
            ["unknown"]
        );
        assert_eq!(
            kept(&cache.get(&cache.scope(&ctx(5, vec![2])), &events)),
            ["dropped"]
        );
    }

    #[test]
    fn past_its_budget_the_cache_drops_the_blocks_used_longest_ago() {
        let budget = 256 * 1024;
        let cache = AnswerCache::new(Vec::new(), budget);
        let scope = cache.scope(&ctx(5, vec![1]));
        let events: Vec<_> = (0..2000).map(event).collect();
        // The first block is read again after every store, so it stays the most recent.
        for chunk in events.chunks(BLOCK as usize) {
            cache.put(&scope, chunk.iter().map(|e| ((e.event.id, 0), sent(e))));
            assert!(cache.get(&scope, &events[..1])[0].is_some());
        }
        let view = cache.view();
        assert!(view.bytes <= budget, "{} bytes held", view.bytes);
        assert!(view.bytes > 0);
        let found = cache.get(&scope, &events);
        assert!(found[0].is_some(), "the block used last is kept");
        assert!(found[1999].is_some(), "the block stored last is kept");
        assert!(found[100].is_none(), "an old block is dropped");
    }
}
