//! `POST /api/v2/events` (batches from any source) and `POST /api/v2/webhooks/odoo` (what an
//! Odoo automation rule's "Send Webhook Notification" action posts).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::{body, parse_json};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::event::{EventKind, now_rfc3339};
use crate::ingest::IngestBatch;
use crate::log::AppendError;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/events", post(ingest))
        .route("/api/v2/webhooks/odoo", post(odoo_webhook))
}

fn check_token(app: &App, presented: Option<&str>) -> ApiResult<()> {
    let expected = app.secrets.ingest_token.as_bytes();
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected)) => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "invalid_token",
            "the ingest token is wrong",
        )),
        None => Err(ApiError::unauthorized(
            "missing_token",
            "the ingest token is missing",
        )),
    }
}

/// How long a source is asked to wait before sending again while the disk is full.
const STORAGE_FULL_RETRY_SECS: u64 = 30;

fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::Closed => {
            ApiError::unavailable("shutting_down", "the server is shutting down", 5)
        }
        AppendError::Store(e) if e.is_storage_full() => ApiError::unavailable(
            "storage_full",
            "the database's disk is full: nothing of this request was stored; send it again later",
            STORAGE_FULL_RETRY_SECS,
        ),
        AppendError::Store(e) => ApiError::internal(e),
    }
}

async fn ingest(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    check_token(&app, bearer)?;
    let batch: IngestBatch = parse_json(&body(raw)?)?;
    let max = app.config.ingest.max_batch_events;
    if batch.events.len() > max {
        return Err(ApiError::invalid_field(
            "events",
            format!(
                "{} events in one batch; at most {max} (ingest.max_batch_events)",
                batch.events.len()
            ),
        ));
    }
    let received_at = now_rfc3339();
    let events = batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, item)| item.into_event(i, &received_at))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let appended = app.log.append(events).await.map_err(append_error)?;
    let ids: Vec<i64> = appended.iter().map(|a| a.id).collect();
    let duplicates = appended.iter().filter(|a| a.duplicate).count();
    Ok(Json(
        json!({"status": "success", "ids": ids, "duplicates": duplicates}),
    ))
}

#[derive(Deserialize)]
struct WebhookParams {
    token: Option<String>,
    event: Option<String>,
}

async fn odoo_webhook(
    State(app): State<Arc<App>>,
    params: Result<Query<WebhookParams>, QueryRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    check_token(&app, params.token.as_deref())?;
    let kind = params
        .event
        .as_deref()
        .map(|e| e.parse::<EventKind>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_event_kind", format!("event= {e}")))?;
    let object: Map<String, Value> = parse_json(&body(raw)?)?;
    let event = crate::odoo::webhook::event(object, kind)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    app.odoo.webhook_received(&event.model);
    let mut appended = app.log.append(vec![event]).await.map_err(append_error)?;
    let appended = appended
        .pop()
        .ok_or_else(|| ApiError::internal("append answered no id"))?;
    Ok(Json(json!({
        "status": "success",
        "id": appended.id,
        "duplicate": appended.duplicate,
    })))
}
