//! `POST /api/v2/sync/pull` and `GET /api/v2/sync/state`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{OnDelivered, OnPartDelivered, body, identify, json_response, parse_json};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::positions::DeviceKey;
use crate::sync::{self, DeviceCursor, PullRequest, StateAnswer};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/sync/pull", post(pull))
        .route("/api/v2/sync/state", get(state))
        .route("/api/v2/sync/stream", get(stream))
}

async fn pull(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let identity = identify(&app, &headers).await?;
    // Header values share the connection's read buffer: a long-polling pull must not keep it.
    drop(headers);
    let request: PullRequest = parse_json(&body(raw)?)?;
    let mut answer = sync::pull(&app, &identity, request).await?;
    let delivery = answer.delivery.take();
    let mut response = json_response(answer.to_json());
    // The device moves past this page once the answer has been written out to it.
    if let Some(delivery) = delivery {
        response
            .extensions_mut()
            .insert(OnDelivered::new(move || delivery.commit()));
    }
    Ok(response)
}

/// A query parameter that must be there.
fn required(name: &str, value: Option<String>) -> ApiResult<String> {
    value.ok_or_else(|| ApiError::invalid_field(name, "missing"))
}

fn user_id_param(value: Option<String>) -> ApiResult<i64> {
    required("user_id", value)?
        .trim()
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_field("user_id", "must be an integer"))
}

#[derive(Deserialize)]
struct StateParams {
    user_id: Option<String>,
    device_id: Option<String>,
    app_type: Option<String>,
}

async fn state(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<StateParams>, QueryRejection>,
) -> ApiResult<Json<StateAnswer>> {
    let identity = identify(&app, &headers).await?;
    let Query(params) = params?;
    let user_id = user_id_param(params.user_id)?;
    let device_id = required("device_id", params.device_id)?;
    let answer = sync::state(&app, &identity, user_id, device_id, params.app_type).await?;
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct StreamParams {
    user_id: Option<String>,
    device_id: Option<String>,
    app_type: Option<String>,
    /// Browsers' EventSource cannot send headers: the session may come here instead of
    /// `X-Session-Id`.
    session_id: Option<String>,
}

/// `GET /api/v2/sync/stream`: the device's feed as Server-Sent Events. Each batch is one event
/// whose `id` is its sync token (`Last-Event-ID` resumes from it) and whose data is a pull
/// answer; the device's position moves as each batch is written out to the connection.
async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = params?;
    let session = headers
        .get(super::SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(params.session_id.as_deref());
    let identity = app.auth.verify(session).await?;
    let user_id = user_id_param(params.user_id)?;
    let key = DeviceKey {
        user_id,
        device_id: required("device_id", params.device_id)?,
        app_type: required("app_type", params.app_type)?,
    };
    sync::check_stream(&app, &identity, &key)?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let cursor = DeviceCursor::new(&app, &identity, key, resume)?;
    let heartbeat = Duration::from_secs(app.config.sync.stream_heartbeat_secs);
    let delivered = OnPartDelivered::default();
    let parts = delivered.clone();
    let events = futures_util::stream::unfold(Some((app, cursor)), move |state| {
        let delivered = delivered.clone();
        async move {
            let (app, mut cursor) = state?;
            loop {
                // The next batch waits until the device has moved past this one: it reads from the
                // position the server keeps, and the device stays locked meanwhile.
                match cursor.next(&app, None).await {
                    Ok(mut answer) if answer.events.is_empty() && answer.reset.is_none() => {
                        // Nothing to send: the device moves past what its feed left out, now.
                        if let Some(delivery) = answer.delivery.take() {
                            delivery.commit();
                        }
                        if cursor.stopping() {
                            return None;
                        }
                    }
                    Ok(mut answer) => {
                        // The device moves once the batch has been written out to it; a batch lost
                        // with the connection is sent again to the device's next pull or stream.
                        if let Some(delivery) = answer.delivery.take() {
                            delivered.push(move || delivery.commit());
                        }
                        let event = Event::default()
                            .id(answer.next_sync_token.clone())
                            .data(answer.to_json());
                        return Some((Ok::<_, Infallible>(event), Some((app, cursor))));
                    }
                    // The stream ends with the error, as a pull would have answered it.
                    Err(e) => {
                        let event = Event::default().event("error").data(e.body_json());
                        return Some((Ok(event), None));
                    }
                }
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat))
        .into_response();
    response.extensions_mut().insert(parts);
    Ok(response)
}
