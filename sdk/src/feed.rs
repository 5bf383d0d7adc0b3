//! Feeds described by what they hold: the SDK works out what each device receives.
//!
//! Implement [`Feed`] by saying *which records a user's feed holds* ([`Feed::holds`], a
//! predicate over one version of a record and the context) and, if you like, *how an event is
//! shaped* ([`Feed::shape`]). For each event the SDK then decides:
//!
//! | the record now | the record before the change ([`Prior`]) | the device receives |
//! |---|---|---|
//! | held | | the change, shaped |
//! | not held | not held, or did not exist | nothing |
//! | not held | held, or not known | a removal: `unlink` with `"reason": "left_feed"` |
//! | cannot tell (a field the predicate reads is missing) | | nothing ([`Feed::unknown_is_held`]: the change) |
//!
//! A deletion is sent, shaped, when the deleted record (its last values, or when the deletion
//! carries none, its previous version) was held; not at all when neither its last values nor its
//! previous version were; otherwise (it cannot be told, or its previous version was held but
//! its last values are not) shaped as if it had no payload, and sent without one. When in doubt the SDK removes: an extra removal of a
//! record the device never held is harmless, a copy it should not keep is not.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::{
    Context, ContextField, Event, EventKind, Manifest, Payload, Plugin, PluginError, Prior,
    ShapedEvent,
};

/// Whether a user's feed holds a record, as one version of it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    Yes,
    No,
    /// The version does not say (a field the rule reads is missing).
    Unknown,
}

impl Holds {
    /// Both rules at once: no when either says no, unknown when either cannot tell.
    pub fn and(self, other: Holds) -> Holds {
        match (self, other) {
            (Holds::No, _) | (_, Holds::No) => Holds::No,
            (Holds::Unknown, _) | (_, Holds::Unknown) => Holds::Unknown,
            (Holds::Yes, Holds::Yes) => Holds::Yes,
        }
    }
}

impl From<bool> for Holds {
    fn from(yes: bool) -> Holds {
        if yes { Holds::Yes } else { Holds::No }
    }
}

/// `None` (the record does not say) is [`Holds::Unknown`].
impl From<Option<bool>> for Holds {
    fn from(answer: Option<bool>) -> Holds {
        answer.map_or(Holds::Unknown, Holds::from)
    }
}

/// One version of a record, as an event tells it: its model and id, and its fields (none when
/// the event has no payload). Reads its fields as [`Payload`] does.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub model: &'a str,
    pub record_id: i64,
    pub fields: Payload<'a>,
}

impl<'a> std::ops::Deref for Record<'a> {
    type Target = Payload<'a>;

    fn deref(&self) -> &Payload<'a> {
        &self.fields
    }
}

/// A feed plugin described by the records its feed holds. Export it with
/// [`export_feed!`](crate::export_feed).
pub trait Feed {
    /// The plugin's `[plugins.<name>.config]` table. Give every field a serde default and use
    /// `#[serde(deny_unknown_fields)]`: a typo is then refused when the plugin is loaded, and
    /// the running version stays. [`NoConfig`] for a plugin without settings.
    type Config: DeserializeOwned;

    /// Describes the plugin. Called once at load; must not depend on a config.
    fn describe() -> Manifest;

    /// Whether the feed of the user in `ctx` holds `record`, as this version of it says
    /// (default: every record of the manifest's models).
    fn holds(record: &Record<'_>, ctx: &Context, config: &Self::Config) -> Holds {
        let _ = (record, ctx, config);
        Holds::Yes
    }

    /// How a change of a record the feed holds reaches the client (default: as it is).
    /// Deletions come here too: when the record was held, and, without their payload, when
    /// that cannot be told (so that nothing of the record reaches the client through `data`).
    fn shape(event: &Event, ctx: &Context, config: &Self::Config) -> ShapedEvent {
        let _ = (ctx, config);
        ShapedEvent::keep(event)
    }

    /// Whether a create or write whose record [`Feed::holds`] cannot place (`Unknown`) is sent
    /// (default: no, it is left out). Say yes for a feed whose rules only narrow what a
    /// record's payload can tell, such as one filtering by company where records without a
    /// company are everyone's.
    fn unknown_is_held() -> bool {
        false
    }

    /// Whether the host may reuse answers, and between whom (see
    /// [`Plugin::answers_depend_on`]); the promise covers `holds` and `shape` together.
    fn answers_depend_on() -> Option<Vec<ContextField>> {
        None
    }
}

/// The config of a plugin without settings: an empty table, or none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// The [`Plugin`] a [`Feed`] makes: what [`export_feed!`](crate::export_feed) exports, and
/// what native tests call `shape` on.
pub struct FeedPlugin<F>(PhantomData<F>);

impl<F: Feed> Plugin for FeedPlugin<F> {
    fn describe() -> Manifest {
        F::describe()
    }

    fn check_config(config: &str) -> Result<(), String> {
        parse::<F::Config>(config).map(|_| ())
    }

    fn shape(ctx: Context, events: Vec<Event>) -> Result<Vec<ShapedEvent>, PluginError> {
        let config = parse::<F::Config>(&ctx.config).map_err(PluginError::BadConfig)?;
        Ok(events
            .iter()
            .filter_map(|event| decide::<F>(event, &ctx, &config))
            .collect())
    }

    fn answers_depend_on() -> Option<Vec<ContextField>> {
        F::answers_depend_on()
    }
}

fn parse<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| e.to_string())
}

/// What the device receives for `event` (see the table in this module's documentation).
pub fn decide<F: Feed>(event: &Event, ctx: &Context, config: &F::Config) -> Option<ShapedEvent> {
    let record = |fields: Payload<'_>| -> Holds {
        let version = Record {
            model: &event.model,
            record_id: event.record_id,
            fields,
        };
        F::holds(&version, ctx, config)
    };
    let now = event.payload().unwrap_or_default();
    let held_before = || match &event.prior {
        Prior::None => Holds::No,
        Prior::Unknown => Holds::Unknown,
        Prior::Changed(values) => match Payload::parse(values) {
            Some(values) => record(now.overlaid(&values)),
            None => Holds::Unknown,
        },
    };
    match event.kind {
        EventKind::Create | EventKind::Write => match record(now.clone()) {
            Holds::Yes => Some(F::shape(event, ctx, config)),
            Holds::Unknown if F::unknown_is_held() => Some(F::shape(event, ctx, config)),
            Holds::Unknown => None,
            Holds::No => match held_before() {
                Holds::No => None,
                Holds::Yes | Holds::Unknown => Some(ShapedEvent::remove(event)),
            },
        },
        EventKind::Unlink => {
            let held = match record(now.clone()) {
                Holds::Unknown => held_before(),
                // Not held as it was deleted, but maybe as a device had it before (a history
                // folded into this deletion): told of it, with nothing of the record.
                Holds::No => match held_before() {
                    Holds::No => Holds::No,
                    Holds::Yes | Holds::Unknown => Holds::Unknown,
                },
                Holds::Yes => Holds::Yes,
            };
            match held {
                Holds::Yes => Some(F::shape(event, ctx, config)),
                Holds::No => None,
                // A device may hold the record: told of the deletion, with nothing of it.
                Holds::Unknown => {
                    let bare = Event {
                        payload: None,
                        ..event.clone()
                    };
                    Some(F::shape(&bare, ctx, config).with_payload(None))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::PayloadChange;
    use crate::testing::{context, event, with_payload, with_prior};

    /// Each salesperson's own orders.
    struct OwnOrders;

    impl Feed for OwnOrders {
        type Config = NoConfig;
        fn describe() -> Manifest {
            Manifest::new("own-orders", "0").with_payloads()
        }
        fn holds(order: &Record<'_>, ctx: &Context, _: &NoConfig) -> Holds {
            order.id("user_id").map(|s| s == ctx.user_id).into()
        }
        fn shape(event: &Event, _: &Context, _: &NoConfig) -> ShapedEvent {
            ShapedEvent::keep(event).with_data(json!({"mine": true}))
        }
    }

    /// What user 5 receives for `event`: "send", "remove", "bare" (an unlink without
    /// payload or data) or "nothing".
    fn outcome(event: Event) -> &'static str {
        let answer = FeedPlugin::<OwnOrders>::shape(context(5), vec![event]).expect("shape");
        match answer.as_slice() {
            [] => "nothing",
            [one] if one.removal => "remove",
            [one] if one.payload == PayloadChange::Drop => "bare",
            [one] if one.payload == PayloadChange::Keep && one.data.is_some() => "send",
            other => panic!("{other:?}"),
        }
    }

    fn order(kind: EventKind, salesperson: serde_json::Value) -> Event {
        with_payload(
            event(1, "sale.order", 7, kind),
            json!({"id": 7, "user_id": salesperson}),
        )
    }

    #[test]
    fn creates_and_writes_are_sent_dropped_or_removed_by_the_record_now_and_before() {
        use EventKind::{Create, Write};
        assert_eq!(outcome(order(Create, json!(5))), "send");
        assert_eq!(outcome(order(Create, json!(6))), "nothing");
        // Another salesperson's order that stays theirs.
        assert_eq!(outcome(order(Write, json!(6))), "nothing");
        // Reassigned from 5 to 6: it leaves 5's feed.
        let reassigned = with_prior(order(Write, json!(6)), Some(json!({"user_id": 5})));
        assert_eq!(outcome(reassigned), "remove");
        // From 6 to 5: it enters 5's feed.
        let gained = with_prior(order(Write, json!(5)), Some(json!({"user_id": 6})));
        assert_eq!(outcome(gained), "send");
        // Not 5's, and what it was before is not known: when in doubt, remove.
        assert_eq!(outcome(with_prior(order(Write, json!(6)), None)), "remove");
        // A write that does not say whose order it is: nothing to act on.
        let unsaid = with_prior(
            with_payload(event(1, "sale.order", 7, Write), json!({"id": 7})),
            Some(json!({"user_id": 5})),
        );
        assert_eq!(outcome(unsaid), "nothing");
    }

    #[test]
    fn deletions_are_sent_when_the_record_was_held_and_bare_when_that_cannot_be_told() {
        use EventKind::Unlink;
        assert_eq!(outcome(order(Unlink, json!(5))), "send");
        assert_eq!(outcome(order(Unlink, json!(6))), "nothing");
        // Without values of its own, the deletion is judged by the record's previous version.
        let bare = event(1, "sale.order", 7, Unlink);
        assert_eq!(
            outcome(with_prior(bare.clone(), Some(json!({"user_id": 5})))),
            "send"
        );
        assert_eq!(
            outcome(with_prior(bare.clone(), Some(json!({"user_id": 6})))),
            "nothing"
        );
        assert_eq!(outcome(with_prior(bare, None)), "bare");
        // Deleted as another's, but it was 5's before (a reassignment folded into the
        // deletion): 5's devices must still drop it, and learn nothing of it.
        let moved_then_deleted = with_prior(order(Unlink, json!(6)), Some(json!({"user_id": 5})));
        assert_eq!(outcome(moved_then_deleted), "bare");
        assert_eq!(outcome(with_prior(order(Unlink, json!(6)), None)), "bare");
    }

    #[test]
    fn a_config_the_feed_does_not_know_is_refused() {
        assert_eq!(FeedPlugin::<OwnOrders>::check_config("{}"), Ok(()));
        let refused =
            FeedPlugin::<OwnOrders>::check_config(r#"{"only_own": true}"#).expect_err("a typo");
        assert!(refused.contains("only_own"), "{refused}");
    }

    #[test]
    fn holds_combine() {
        assert_eq!(Holds::Yes.and(Holds::No), Holds::No);
        assert_eq!(Holds::Unknown.and(Holds::No), Holds::No);
        assert_eq!(Holds::Yes.and(Holds::Unknown), Holds::Unknown);
        assert_eq!(Holds::from(None), Holds::Unknown);
        assert_eq!(Holds::from(Some(true)), Holds::Yes);
    }
}
