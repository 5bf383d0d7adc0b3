//! `GET /healthz` (the process is up) and `GET /readyz` (the database answers and has room).
//! Odoo being unreachable does not make the server unready (pulls and ingest go on); `/readyz`
//! says how the connection stands.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    app.store.ping().await.map_err(|e| {
        if e.is_storage_full() {
            // Said once in the log by the store, when the disk filled.
            return ApiError::unavailable(
                "storage_full",
                "the database's disk is full: ingest is refused until space is freed",
                30,
            );
        }
        tracing::warn!(error = %e, "readiness check: database does not answer");
        ApiError::unavailable("database_unavailable", "the database does not answer", 5)
    })?;
    let mut answer = json!({"status": "ready", "head": app.log.head()});
    if app.config.odoo.enabled() {
        let odoo = app.odoo.view();
        answer["odoo"] = json!({"connection": odoo.connection, "error": odoo.error});
    }
    Ok(Json(answer))
}
