//! Pull and state: what a device receives, and where it stands.
//!
//! A pull reads the log after the device's position (the one the server keeps, or the one in
//! the `sync_token` the client sent), keeps the events of the app_type's feed, and moves the
//! position past every event it scanned: those it returns and those the feed does not want.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::event::{LoggedEvent, now_rfc3339};
use crate::identity::Identity;
use crate::positions::{DeviceKey, DeviceState};
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
}

/// Why a device must drop its local copy and start again from the head of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The device's position lies beyond the log's newest event: the log it was reading is not
    /// this one (the database was replaced).
    CursorAhead,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::CursorAhead => "cursor_ahead",
        }
    }
}

pub struct PullAnswer {
    pub events: Vec<Arc<LoggedEvent>>,
    pub next_sync_token: String,
    pub has_more: bool,
    pub reset: Option<ResetReason>,
}

impl PullAnswer {
    /// The 200 body: the seed's fields first, then the additive ones.
    pub fn to_json(&self) -> String {
        let events_len: usize = self.events.iter().map(|e| e.wire.len() + 1).sum();
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
            out.push_str(&event.wire);
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

pub async fn pull(app: &App, identity: &Identity, request: PullRequest) -> ApiResult<PullAnswer> {
    check_user(identity, request.user_id)?;
    check_device_id(&request.device_id)?;
    let feed = app.feed(&request.app_type)?;
    let sync = &app.config.sync;
    let limit = match request.limit {
        None => sync.default_limit,
        Some(limit) if limit < 1 => {
            return Err(ApiError::invalid_field("limit", "must be at least 1"));
        }
        Some(limit) => limit.min(sync.max_limit),
    };
    let limit = usize::try_from(limit).unwrap_or(1);
    let key = DeviceKey {
        user_id: request.user_id,
        device_id: request.device_id,
        app_type: request.app_type,
    };

    let device = app.positions.lock(key).await.map_err(ApiError::internal)?;
    let start = match &request.sync_token {
        Some(token) => {
            app.tokens
                .verify(device.key(), token)
                .map_err(|e| ApiError::bad_request("invalid_sync_token", e.to_string()))?
                .position
        }
        None => device.state().map_or(0, |s| s.position),
    };

    let head = app.log.head();
    let (events, scanned_to, has_more, reset) = if start > head {
        (Vec::new(), head, false, Some(ResetReason::CursorAhead))
    } else {
        let scan = app
            .log
            .scan(start, Some(feed.models.as_slice()), limit, sync.scan_window)
            .await
            .map_err(ApiError::internal)?;
        (scan.events, scan.scanned_to, scan.has_more, None)
    };

    let next_sync_token = app.tokens.issue(
        device.key(),
        Cursor {
            position: scanned_to,
            epoch: 0,
        },
    );
    let now = now_rfc3339();
    let state = match device.state() {
        Some(old) => DeviceState {
            position: scanned_to,
            sync_count: old.sync_count + 1,
            first_sync_time: old.first_sync_time.clone(),
            last_sync_time: now,
        },
        None => DeviceState {
            position: scanned_to,
            sync_count: 1,
            first_sync_time: now.clone(),
            last_sync_time: now,
        },
    };
    device.commit(state);
    Ok(PullAnswer {
        events,
        next_sync_token,
        has_more,
        reset,
    })
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
        None => app.config.app_types.keys().cloned().collect(),
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
    let feed = app.feed(&app_type)?;
    let pending_events = app
        .log
        .count_after(state.position, Some(feed.models.as_slice()))
        .await
        .map_err(ApiError::internal)?;
    Ok(StateAnswer {
        last_sync_time: state.last_sync_time,
        sync_count: state.sync_count,
        last_event_id: state.position,
        app_type,
        pending_events,
    })
}
