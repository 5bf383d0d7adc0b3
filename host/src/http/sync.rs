//! `POST /api/v2/sync/pull` and `GET /api/v2/sync/state`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{body, identify, json_response, parse_json};
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::sync::{self, PullRequest, StateAnswer};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/sync/pull", post(pull))
        .route("/api/v2/sync/state", get(state))
}

async fn pull(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let identity = identify(&app, &headers).await?;
    let request: PullRequest = parse_json(&body(raw)?)?;
    let answer = sync::pull(&app, &identity, request).await?;
    Ok(json_response(answer.to_json()))
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
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let user_id = params
        .user_id
        .ok_or_else(|| ApiError::invalid_field("user_id", "missing"))?
        .trim()
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_field("user_id", "must be an integer"))?;
    let device_id = params
        .device_id
        .ok_or_else(|| ApiError::invalid_field("device_id", "missing"))?;
    let answer = sync::state(&app, &identity, user_id, device_id, params.app_type).await?;
    Ok(Json(answer))
}
