//! The admin API: `GET /api/v2/admin/plugins` (what runs, and how it fares),
//! `POST /api/v2/admin/plugins/reload`, `GET /api/v2/admin/odoo` (the import, the sweep and
//! the ids check, model by model) and `POST /api/v2/admin/odoo/import` (import models again).
//! Bearer admin token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/admin/plugins", get(list))
        .route("/api/v2/admin/plugins/reload", post(reload))
        .route("/api/v2/admin/odoo", get(odoo))
        .route("/api/v2/admin/odoo/import", post(odoo_import))
}

async fn odoo(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    check_admin(&app, &headers)?;
    Ok(Json(json!(app.odoo.view())))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    /// The models to import again; all synced models when empty or absent.
    #[serde(default)]
    models: Vec<String>,
}

async fn odoo_import(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    check_admin(&app, &headers)?;
    let raw = super::body(raw)?;
    let request: ImportRequest = if raw.iter().all(u8::is_ascii_whitespace) {
        ImportRequest::default()
    } else {
        super::parse_json(&raw)?
    };
    if !app.config.odoo.enabled() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "odoo_not_configured",
            "the server does not read Odoo: `[odoo.models]` names no model",
        ));
    }
    match app.odoo.request_import(&request.models) {
        Ok(models) => Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "models": models})),
        )),
        Err(unknown) => Err(ApiError::invalid_field(
            "models",
            format!("not synced (see `[odoo.models]`): {}", unknown.join(", ")),
        )),
    }
}

fn check_admin(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(app.secrets.admin_token.as_bytes())) => {
            Ok(())
        }
        Some(_) => Err(ApiError::unauthorized(
            "invalid_token",
            "the admin token is wrong",
        )),
        None => Err(ApiError::unauthorized(
            "missing_token",
            "the admin token is missing",
        )),
    }
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    check_admin(&app, &headers)?;
    Ok(Json(status(&app)))
}

async fn reload(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    check_admin(&app, &headers)?;
    match app.plugins.reload().await {
        Ok(()) => Ok(Json(status(&app))),
        Err(e) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "reload_failed",
            format!("{e}; the running plugins stay"),
        )),
    }
}

/// Every entry of plugins.toml with its state: `ok`, `quarantined`, `disabled`, or
/// `load_failed` when the last reload could not load it (the previous version keeps running).
fn status(app: &App) -> Value {
    let set = app.plugins.current();
    let last_error = app.plugins.last_error();
    let plugins: Vec<Value> = set
        .entries
        .iter()
        .map(|(name, entry)| {
            let active = set.active.get(&entry.app_type).filter(|a| a.entry == *name);
            match active {
                Some(active) => {
                    let plugin = &active.plugin;
                    let health = plugin.health.view();
                    let failed_reload = last_error
                        .as_deref()
                        .filter(|e| e.contains(&format!("`plugins.{name}`")));
                    let state = if failed_reload.is_some() {
                        "load_failed"
                    } else if health.quarantined {
                        "quarantined"
                    } else {
                        "ok"
                    };
                    json!({
                        "name": name,
                        "app_type": entry.app_type,
                        "enabled": true,
                        "version_hash": plugin.version_hash,
                        "manifest": plugin.manifest,
                        "on_upgrade": active.on_upgrade,
                        "state": state,
                        "last_error": failed_reload
                            .map(str::to_string)
                            .or_else(|| health.last_error.map(|e| e.to_string())),
                        "counters": health.counters,
                        "answer_cache": plugin.answer_cache(),
                    })
                }
                None => json!({
                    "name": name,
                    "app_type": entry.app_type,
                    "enabled": entry.enabled,
                    "state": if entry.enabled { "load_failed" } else { "disabled" },
                    "last_error": last_error,
                }),
            }
        })
        .collect();
    json!({
        "file": app.plugins.path().display().to_string(),
        "last_reload_error": last_error,
        "plugins": plugins,
    })
}
