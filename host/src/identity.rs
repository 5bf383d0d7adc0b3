//! Who is calling: the `X-Session-Id` header is an Odoo session id.
//!
//! In `odoo` mode the session is checked with Odoo's `/web/session/get_session_info`, and the
//! answer is cached (accepted sessions for `auth.cache_ok_secs`, refused ones for
//! `auth.cache_error_secs`) so that a pull rarely costs an Odoo round trip. In `static` mode the
//! sessions are listed in the config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use parking_lot::Mutex;
use serde_json::Value;

use crate::config::{AuthConfig, AuthMode, StaticSession};
use crate::error::ApiError;

/// The verified facts of a session, kept for plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: i64,
    pub company_ids: Vec<i64>,
    pub lang: Option<String>,
    pub tz: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the X-Session-Id header is missing")]
    Missing,
    #[error("the session is unknown or expired; log in to Odoo again")]
    Invalid,
    #[error("Odoo could not be asked about the session: {0}")]
    Unavailable(String),
}

/// Seconds a client should wait before retrying when Odoo cannot be reached.
const RETRY_AFTER_SECS: u64 = 5;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing => ApiError::unauthorized("missing_session", e.to_string()),
            AuthError::Invalid => ApiError::unauthorized("invalid_session", e.to_string()),
            AuthError::Unavailable(_) => {
                tracing::warn!(error = %e, "session check failed");
                ApiError::unavailable(
                    "auth_unavailable",
                    "the session cannot be checked right now; retry shortly",
                    RETRY_AFTER_SECS,
                )
            }
        }
    }
}

pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    Static(HashMap<String, Arc<Identity>>),
    Odoo(OdooSessions),
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Authenticator, String> {
        let mode = match config.mode {
            AuthMode::Static => Mode::Static(
                config
                    .sessions
                    .iter()
                    .map(|(session, facts)| (session.clone(), Arc::new(static_identity(facts))))
                    .collect(),
            ),
            AuthMode::Odoo => Mode::Odoo(OdooSessions::new(config)?),
        };
        Ok(Authenticator { mode })
    }

    pub fn is_static(&self) -> bool {
        matches!(self.mode, Mode::Static(_))
    }

    pub async fn verify(&self, session_id: Option<&str>) -> Result<Arc<Identity>, AuthError> {
        let session_id = session_id
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Missing)?;
        match &self.mode {
            Mode::Static(sessions) => sessions.get(session_id).cloned().ok_or(AuthError::Invalid),
            Mode::Odoo(odoo) => odoo.verify(session_id).await,
        }
    }
}

fn static_identity(facts: &StaticSession) -> Identity {
    match facts {
        StaticSession::Uid(uid) => Identity {
            uid: *uid,
            company_ids: vec![1],
            lang: None,
            tz: None,
        },
        StaticSession::Full(full) => Identity {
            uid: full.uid,
            company_ids: full.company_ids.clone(),
            lang: full.lang.clone(),
            tz: full.tz.clone(),
        },
    }
}

/// Cached entries beyond this many are pruned of expired ones, then dropped wholesale.
const CACHE_CAPACITY: usize = 100_000;

struct OdooSessions {
    client: reqwest::Client,
    endpoint: String,
    ok_ttl: Duration,
    error_ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    /// Sessions Odoo is being asked about now: requests with the same session wait for the
    /// one question instead of each asking again, such as a fleet of devices reconnecting
    /// after a restart, or every request while Odoo is slow or down.
    asking: Mutex<HashMap<String, Arc<Question>>>,
}

/// One question to Odoo about one session, answered once for everyone waiting on it.
type Question = OnceCell<Result<Arc<Identity>, AuthError>>;

/// A request's interest in a [`Question`]. Dropped, it takes the question off the list once it
/// is answered or nobody else waits for it, so that the next request asks anew.
struct Asking<'a> {
    sessions: &'a OdooSessions,
    session_id: &'a str,
    question: Arc<Question>,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let mut asking = self.sessions.asking.lock();
        // Clones are made under this lock: with it held, two holders are the list and us.
        if asking
            .get(self.session_id)
            .is_some_and(|q| Arc::ptr_eq(q, &self.question))
            && (self.question.initialized() || Arc::strong_count(&self.question) <= 2)
        {
            asking.remove(self.session_id);
        }
    }
}

/// Odoo's last word on a session, and until when it stands. `Err` is a refused session.
type Cached = (Instant, Result<Arc<Identity>, ()>);

impl OdooSessions {
    fn new(config: &AuthConfig) -> Result<OdooSessions, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.odoo_timeout_ms))
            .connect_timeout(Duration::from_millis(config.odoo_timeout_ms))
            .build()
            .map_err(|e| format!("HTTP client for Odoo: {e}"))?;
        Ok(OdooSessions {
            client,
            endpoint: format!(
                "{}/web/session/get_session_info",
                config.odoo_url.trim_end_matches('/')
            ),
            ok_ttl: Duration::from_secs(config.cache_ok_secs),
            error_ttl: Duration::from_secs(config.cache_error_secs),
            cache: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
        })
    }

    async fn verify(&self, session_id: &str) -> Result<Arc<Identity>, AuthError> {
        let now = Instant::now();
        if let Some((until, outcome)) = self.cache.lock().get(session_id)
            && *until > now
        {
            return outcome.clone().map_err(|()| AuthError::Invalid);
        }
        let asking = Asking {
            question: self
                .asking
                .lock()
                .entry(session_id.to_string())
                .or_default()
                .clone(),
            sessions: self,
            session_id,
        };
        // The first request asks; the others wait for its answer. Should it go away before the
        // answer (its client hung up), one of them asks in its place. Boxed: the HTTP call's
        // state would otherwise be part of every request's future, a waiting pull's included.
        Box::pin(
            asking
                .question
                .get_or_init(|| self.ask_and_cache(session_id)),
        )
        .await
        .clone()
    }

    async fn ask_and_cache(&self, session_id: &str) -> Result<Arc<Identity>, AuthError> {
        let outcome = self.ask_odoo(session_id).await;
        let now = Instant::now();
        let cached = match &outcome {
            Ok(identity) => Some((now + self.ok_ttl, Ok(identity.clone()))),
            Err(AuthError::Invalid) => Some((now + self.error_ttl, Err(()))),
            // Odoo being down says nothing about the session: ask again next time.
            Err(_) => None,
        };
        if let Some(entry) = cached {
            let mut cache = self.cache.lock();
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(session_id.to_string(), entry);
        }
        outcome
    }

    async fn ask_odoo(&self, session_id: &str) -> Result<Arc<Identity>, AuthError> {
        let response = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::COOKIE, format!("session_id={session_id}"))
            .json(&serde_json::json!({"jsonrpc": "2.0", "method": "call", "params": {}}))
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("{}: {e}", self.endpoint)))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(AuthError::Invalid);
        }
        if !status.is_success() {
            return Err(AuthError::Unavailable(format!(
                "{} answered HTTP {status}",
                self.endpoint
            )));
        }
        let body: Value = response.json().await.map_err(|e| {
            AuthError::Unavailable(format!(
                "{} answered something not JSON: {e}",
                self.endpoint
            ))
        })?;
        parse_session_info(&body).map(Arc::new)
    }
}

/// Reads Odoo's JSON-RPC answer to `/web/session/get_session_info`.
pub fn parse_session_info(body: &Value) -> Result<Identity, AuthError> {
    if let Some(error) = body.get("error") {
        let name = error
            .pointer("/data/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let code = error.get("code").and_then(Value::as_i64);
        // Code 100 is Odoo's "session expired"; a refused login is the same to us.
        if code == Some(100) || name.contains("SessionExpired") || name.contains("AccessDenied") {
            return Err(AuthError::Invalid);
        }
        return Err(AuthError::Unavailable(format!(
            "Odoo answered an error: {}",
            error.get("message").and_then(Value::as_str).unwrap_or(name)
        )));
    }
    let result = body
        .get("result")
        .ok_or_else(|| AuthError::Unavailable("Odoo's answer has no `result`".into()))?;
    // A session that is not logged in has no uid (null or false).
    let uid = result
        .get("uid")
        .and_then(Value::as_i64)
        .ok_or(AuthError::Invalid)?;
    let company_ids = match result.pointer("/user_companies/allowed_companies") {
        // Odoo 14+: {"1": {"id": 1, "name": ...}, ...}
        Some(Value::Object(companies)) => companies
            .iter()
            .filter_map(|(key, company)| {
                company
                    .get("id")
                    .and_then(Value::as_i64)
                    .or_else(|| key.parse().ok())
            })
            .collect(),
        // Odoo 13: [[1, "My Company"], ...]
        Some(Value::Array(companies)) => companies
            .iter()
            .filter_map(|c| c.get(0).and_then(Value::as_i64))
            .collect(),
        _ => Vec::new(),
    };
    let context = result.get("user_context");
    let text = |key: &str| {
        context
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut company_ids: Vec<i64> = company_ids;
    company_ids.sort_unstable();
    Ok(Identity {
        uid,
        company_ids,
        lang: text("lang"),
        tz: text("tz"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_odoo_17_session_info() {
        let body = json!({"jsonrpc": "2.0", "id": null, "result": {
            "uid": 5, "is_system": false, "is_admin": false, "name": "Sales Rep",
            "user_context": {"lang": "ar_001", "tz": "Africa/Casablanca", "uid": 5},
            "user_companies": {"current_company": 1, "allowed_companies": {
                "1": {"id": 1, "name": "ProPanel", "sequence": 10, "child_ids": [], "parent_id": false},
                "3": {"id": 3, "name": "ProPanel Rabat", "sequence": 20, "child_ids": [], "parent_id": 1}
            }, "disallowed_ancestor_companies": {}}
        }});
        assert_eq!(
            parse_session_info(&body),
            Ok(Identity {
                uid: 5,
                company_ids: vec![1, 3],
                lang: Some("ar_001".into()),
                tz: Some("Africa/Casablanca".into()),
            })
        );
    }

    #[test]
    fn an_expired_session_is_invalid_and_a_server_error_is_unavailable() {
        let expired = json!({"jsonrpc": "2.0", "id": null, "error": {"code": 100,
            "message": "Odoo Session Expired", "data": {"name": "odoo.http.SessionExpiredException",
            "debug": "", "message": "Session expired", "arguments": ["Session expired"], "context": {}}}});
        assert_eq!(parse_session_info(&expired), Err(AuthError::Invalid));
        let crash = json!({"jsonrpc": "2.0", "id": null, "error": {"code": 200,
            "message": "Odoo Server Error", "data": {"name": "builtins.KeyError"}}});
        assert!(matches!(
            parse_session_info(&crash),
            Err(AuthError::Unavailable(_))
        ));
        let public = json!({"jsonrpc": "2.0", "id": null, "result": {"uid": null}});
        assert_eq!(parse_session_info(&public), Err(AuthError::Invalid));
    }
}
