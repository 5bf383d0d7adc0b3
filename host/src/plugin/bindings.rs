//! The WIT contract's generated bindings, kept inside this module; the rest of the host speaks
//! its own types, converted here.
//!
//! Two versions of the contract load: `smartsync:plugin@0.2.0` (`sdk/wit/`), and
//! `smartsync:plugin@0.1.0` (`sdk/wit-0.1.0/`), whose plugins see no prior versions, never
//! remove a record from a feed and have no config check. [`Pre`] and [`Bound`] hide which one a
//! component was built for.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::{CallContext, ContextField, Manifest as HostManifest, Shaped, ShapedPayload};
use crate::event::{EventKind, LoggedEvent, Prior};

mod v2 {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "feed-plugin",
    });
}

mod v1 {
    wasmtime::component::bindgen!({
        path: "../sdk/wit-0.1.0",
        world: "feed-plugin",
    });
}

use v1::smartsync::plugin::types as wit1;
use v2::smartsync::plugin::types as wit2;

/// The contract version a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }
}

/// A component checked against one version of the contract, ready to instantiate.
pub enum Pre<T: 'static> {
    V1(v1::FeedPluginPre<T>),
    V2(v2::FeedPluginPre<T>),
}

impl<T: Send + 'static> Pre<T> {
    /// Checks `pre` against the newest contract first; the error names the version the host
    /// wants, and what the component lacks.
    pub fn new(pre: InstancePre<T>) -> anyhow::Result<Pre<T>> {
        let newest = match v2::FeedPluginPre::new(pre.clone()) {
            Ok(pre) => return Ok(Pre::V2(pre)),
            Err(e) => e,
        };
        match v1::FeedPluginPre::new(pre) {
            Ok(pre) => Ok(Pre::V1(pre)),
            Err(_) => Err(anyhow::anyhow!(
                "does not export the smartsync:plugin@0.2.0 feed-plugin world (nor the \
                 0.1.0 one, which still loads); build it against this smartsync's \
                 sdk/wit/plugin.wit: {newest:#}"
            )),
        }
    }

    pub fn contract(&self) -> Contract {
        match self {
            Pre::V1(_) => Contract::V0_1,
            Pre::V2(_) => Contract::V0_2,
        }
    }

    pub fn instance_pre(&self) -> &InstancePre<T> {
        match self {
            Pre::V1(pre) => pre.instance_pre(),
            Pre::V2(pre) => pre.instance_pre(),
        }
    }

    /// The typed exports of an instance made from this.
    pub fn bind(&self, store: &mut Store<T>, instance: &Instance) -> wasmtime::Result<Bound> {
        Ok(match self {
            Pre::V1(_) => Bound::V1(v1::FeedPlugin::new(store, instance)?),
            Pre::V2(_) => Bound::V2(v2::FeedPlugin::new(store, instance)?),
        })
    }
}

/// An instance's typed exports.
pub enum Bound {
    V1(v1::FeedPlugin),
    V2(v2::FeedPlugin),
}

/// What a `shape` call answered: the plugin's own error as text, or its events.
pub type ShapeAnswer = Result<Vec<Shaped>, String>;

impl Bound {
    pub fn describe<T: Send>(&self, store: &mut Store<T>) -> wasmtime::Result<HostManifest> {
        Ok(match self {
            Bound::V1(p) => manifest1(p.call_describe(store)?),
            Bound::V2(p) => manifest2(p.call_describe(store)?),
        })
    }

    /// The plugin's verdict on its config; a 0.1.0 plugin takes any.
    pub fn check_config<T: Send>(
        &self,
        store: &mut Store<T>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Bound::V1(_) => Ok(Ok(())),
            Bound::V2(p) => p.call_check_config(store, config),
        }
    }

    pub fn shape<T: Send>(
        &self,
        store: &mut Store<T>,
        ctx: &CallContext,
        config: &str,
        events: &[std::sync::Arc<LoggedEvent>],
        with_payload: bool,
    ) -> wasmtime::Result<ShapeAnswer> {
        match self {
            Bound::V1(p) => {
                let input: Vec<wit1::Event> =
                    events.iter().map(|e| event1(e, with_payload)).collect();
                let answer = p.call_shape(store, &context1(ctx, config), &input)?;
                Ok(answer
                    .map(|shaped| shaped.into_iter().map(shaped1).collect())
                    .map_err(error1))
            }
            Bound::V2(p) => {
                let input: Vec<wit2::Event> =
                    events.iter().map(|e| event2(e, with_payload)).collect();
                let answer = p.call_shape(store, &context2(ctx, config), &input)?;
                Ok(answer
                    .map(|shaped| shaped.into_iter().map(shaped2).collect())
                    .map_err(error2))
            }
        }
    }
}

/// Both versions' types are the same shapes under two names: one conversion, written twice.
macro_rules! conversions {
    ($wit:ident, $context:ident, $manifest:ident, $error:ident, $field:ident) => {
        fn $context(ctx: &CallContext, config: &str) -> $wit::Context {
            $wit::Context {
                user_id: ctx.user_id,
                device_id: ctx.device_id.clone(),
                app_type: ctx.app_type.clone(),
                company_ids: ctx.company_ids.clone(),
                lang: ctx.lang.clone(),
                tz: ctx.tz.clone(),
                config: config.to_string(),
            }
        }

        fn $manifest(m: $wit::Manifest) -> HostManifest {
            HostManifest {
                name: m.name,
                version: m.version,
                models: m.models,
                needs_payload: m.needs_payload,
                answers_depend_on: None,
                contract: None,
            }
        }

        /// The plugin's own error, as text.
        fn $error(e: $wit::PluginError) -> String {
            match e {
                $wit::PluginError::BadConfig(m) => format!("bad config: {m}"),
                $wit::PluginError::Failed(m) => m,
            }
        }

        impl From<$wit::ContextField> for ContextField {
            fn from(field: $wit::ContextField) -> ContextField {
                match field {
                    $wit::ContextField::UserId => ContextField::UserId,
                    $wit::ContextField::DeviceId => ContextField::DeviceId,
                    $wit::ContextField::CompanyIds => ContextField::CompanyIds,
                    $wit::ContextField::Lang => ContextField::Lang,
                    $wit::ContextField::Tz => ContextField::Tz,
                }
            }
        }

        impl From<EventKind> for $wit::EventKind {
            fn from(kind: EventKind) -> $wit::EventKind {
                match kind {
                    EventKind::Create => $wit::EventKind::Create,
                    EventKind::Write => $wit::EventKind::Write,
                    EventKind::Unlink => $wit::EventKind::Unlink,
                }
            }
        }

        fn $field(payload: $wit::PayloadChange) -> ShapedPayload {
            match payload {
                $wit::PayloadChange::Keep => ShapedPayload::Keep,
                $wit::PayloadChange::Drop => ShapedPayload::Drop,
                $wit::PayloadChange::Replace(json) => ShapedPayload::Replace(json),
            }
        }
    };
}

conversions!(wit1, context1, manifest1, error1, payload1);
conversions!(wit2, context2, manifest2, error2, payload2);

fn event1(logged: &LoggedEvent, with_payload: bool) -> wit1::Event {
    let e = &logged.event;
    wit1::Event {
        id: e.id,
        model: e.model.clone(),
        record_id: e.record_id,
        kind: e.kind.into(),
        timestamp: e.timestamp.clone(),
        payload: if with_payload {
            e.payload.clone()
        } else {
            None
        },
        changed_fields: e.changed_fields.clone(),
    }
}

fn event2(logged: &LoggedEvent, with_payload: bool) -> wit2::Event {
    let e = &logged.event;
    wit2::Event {
        id: e.id,
        model: e.model.clone(),
        record_id: e.record_id,
        kind: e.kind.into(),
        timestamp: e.timestamp.clone(),
        payload: if with_payload {
            e.payload.clone()
        } else {
            None
        },
        changed_fields: e.changed_fields.clone(),
        prior: match &e.prior {
            Prior::None => wit2::Prior::None,
            Prior::Unknown => wit2::Prior::Unknown,
            // A plugin that reads no payloads cannot put values back into one.
            Prior::Changed(_) if !with_payload => wit2::Prior::Unknown,
            Prior::Changed(values) => wit2::Prior::Changed(values.clone()),
        },
    }
}

fn shaped1(s: wit1::ShapedEvent) -> Shaped {
    Shaped {
        id: s.id,
        payload: payload1(s.payload),
        data: s.data,
        removal: false,
    }
}

fn shaped2(s: wit2::ShapedEvent) -> Shaped {
    Shaped {
        id: s.id,
        payload: payload2(s.payload),
        data: s.data,
        removal: s.removal,
    }
}

/// The name of the optional export by which a plugin lets the host reuse its answers.
pub const ANSWERS_DEPEND_ON: &str = "answers-depend-on";

/// Its type: `func() -> option<list<context-field>>` (the same in both versions).
pub type AnswersDependOn = wasmtime::component::TypedFunc<(), (Option<Vec<wit2::ContextField>>,)>;
