//! A stand-in for Odoo, which cannot run here: `/web/session/get_session_info` (below) and
//! `/jsonrpc` with the records behind it ([`crate::odoo_db`]).
//!
//! It answers with the shapes Odoo 17 sends: a JSON-RPC `result` with `uid`, `user_context`
//! and `user_companies.allowed_companies` keyed by company id for a live session, and the
//! `odoo.http.SessionExpiredException` error (code 100, HTTP 200) for any other session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Mutex;

use crate::odoo_db::OdooDb;
use crate::spawn_router;

/// The fake's database, user and API key.
pub const ODOO_DB: &str = "propanel";
pub const ODOO_LOGIN: &str = "smartsync@example.com";
pub const ODOO_KEY: &str = "test-odoo-api-key-0123456789";

/// A logged-in session: (uid, allowed company ids).
type Login = (i64, Vec<i64>);

#[derive(Clone, Default)]
struct State {
    sessions: Arc<Mutex<HashMap<String, Login>>>,
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

pub struct FakeOdoo {
    pub url: String,
    /// The records behind `/jsonrpc`, and the webhook rules.
    pub db: OdooDb,
    state: State,
}

impl FakeOdoo {
    pub async fn start() -> FakeOdoo {
        let state = State::default();
        let handler_state = state.clone();
        let db = OdooDb::new(ODOO_DB, ODOO_LOGIN, ODOO_KEY);
        let rpc_db = db.clone();
        let router = Router::new()
            .route(
                "/jsonrpc",
                post(move |body: String| {
                    let db = rpc_db.clone();
                    async move {
                        let delay = db.delay();
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if db.is_down() {
                            return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
                        }
                        match db.answer(&body) {
                            Some(answer) => axum::Json(answer).into_response(),
                            None => {
                                (StatusCode::BAD_REQUEST, "not a JSON-RPC call").into_response()
                            }
                        }
                    }
                }),
            )
            .route(
                "/web/session/get_session_info",
                post(move |headers: HeaderMap, body: String| {
                    let state = handler_state.clone();
                    async move {
                        let delay = state.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        session_info(&state, &headers, &body)
                    }
                }),
            );
        FakeOdoo {
            url: spawn_router(router).await,
            db,
            state,
        }
    }

    /// A logged-in session of `uid` in `companies`.
    pub fn login(&self, session_id: &str, uid: i64, companies: &[i64]) {
        self.state
            .sessions
            .lock()
            .expect("lock")
            .insert(session_id.into(), (uid, companies.to_vec()));
    }

    pub fn logout(&self, session_id: &str) {
        self.state.sessions.lock().expect("lock").remove(session_id);
    }

    /// How many times the session endpoint was called.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// While set, answer as a proxy does in front of a stopped Odoo: 502.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Answers each call after `delay`, as a busy Odoo does.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }
}

fn session_info(state: &State, headers: &HeaderMap, body: &str) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if request["jsonrpc"] != "2.0" || request["method"] != "call" {
        return (StatusCode::BAD_REQUEST, "not a JSON-RPC call").into_response();
    }
    let session = headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|cookies| {
            cookies
                .split(';')
                .filter_map(|c| c.trim().strip_prefix("session_id="))
                .next()
        })
        .unwrap_or("");
    let known = state.sessions.lock().expect("lock").get(session).cloned();
    let answer = match known {
        Some((uid, companies)) => {
            let allowed: serde_json::Map<String, Value> = companies
                .iter()
                .map(|id| {
                    (
                        id.to_string(),
                        json!({"id": id, "name": format!("Company {id}"), "sequence": 10,
                               "child_ids": [], "parent_id": false}),
                    )
                })
                .collect();
            json!({"jsonrpc": "2.0", "id": null, "result": {
                "uid": uid, "is_system": false, "is_admin": false, "is_public": false,
                "name": format!("User {uid}"), "username": format!("user{uid}@example.com"),
                "partner_id": uid + 100, "db": "propanel", "server_version": "17.0",
                "user_context": {"lang": "ar_001", "tz": "Africa/Casablanca", "uid": uid},
                "user_companies": {"current_company": companies.first().copied().unwrap_or(1),
                                   "allowed_companies": allowed,
                                   "disallowed_ancestor_companies": {}},
            }})
        }
        None => json!({"jsonrpc": "2.0", "id": null, "error": {
            "code": 100, "message": "Odoo Session Expired",
            "data": {"name": "odoo.http.SessionExpiredException", "debug": "Traceback ...",
                     "message": "Session expired", "arguments": ["Session expired"],
                     "context": {}}}}),
    };
    axum::Json(answer).into_response()
}
