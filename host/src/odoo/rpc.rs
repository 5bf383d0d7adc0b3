//! Odoo's external API: JSON-RPC 2.0 on `/jsonrpc` (`odoo/http.py`, `JsonRPCDispatcher`;
//! `odoo/service/common.py` and `odoo/service/model.py`).
//!
//! `common.authenticate(db, login, key, {})` answers the user id, or `false`; every other call
//! is `object.execute_kw(db, uid, key, model, method, args, kwargs)`. Odoo 14 and later accept
//! an API key where the password goes. An error is answered with HTTP 200 and
//! `{"error": {"code": 200, "message": "Odoo Server Error", "data": {"name", "message",
//! "arguments", "debug"}}}`; a wrong key on `execute_kw` is `odoo.exceptions.AccessDenied`.
//!
//! The key goes in request bodies only; nothing here logs a body, and [`Client`]'s `Debug`
//! leaves the key out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// How to reach Odoo and as whom.
#[derive(Clone)]
pub struct Credentials {
    /// Base URL (`https://erp.example.com`).
    pub url: String,
    pub database: String,
    pub login: String,
    pub api_key: String,
}

/// `url` without a user name or password in it, for showing.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &shown_url(&self.url))
            .field("database", &self.database)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// Why a call to Odoo failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// Odoo could not be reached or did not answer in time (network, proxy 5xx, timeout): the
    /// same call may succeed later.
    #[error("Odoo cannot be reached: {0}")]
    Unreachable(String),
    /// Odoo refused the login or the API key.
    #[error(
        "Odoo refused the login {login:?} on database {database:?}: check `odoo.login` and `odoo.api_key` (an API key of that user, or its password)"
    )]
    Credentials { login: String, database: String },
    /// Odoo answered with an error (an unknown model or field, a missing access right).
    #[error("Odoo answered {name}: {message}")]
    Odoo { name: String, message: String },
    /// What came back is not Odoo's JSON-RPC.
    #[error("Odoo's answer is not JSON-RPC: {0}")]
    Protocol(String),
}

impl RpcError {
    /// Whether trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, RpcError::Unreachable(_))
    }
}

/// A connection to one Odoo database as one user.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
    /// The user id, once `authenticate` answered it.
    uid: Mutex<Option<i64>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &shown_url(&self.endpoint))
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The context every read is made with: archived records too (`active_test`).
fn read_context() -> Value {
    json!({"active_test": false})
}

impl Client {
    pub fn new(credentials: Credentials, timeout: Duration) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client for Odoo: {e}"))?;
        let endpoint = format!("{}/jsonrpc", credentials.url.trim_end_matches('/'));
        Ok(Client {
            http,
            endpoint,
            credentials,
            uid: Mutex::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// One JSON-RPC call.
    async fn call(&self, service: &str, method: &str, args: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": id,
        });
        let response = self
            .http
            .post(&self.endpoint)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Unreachable(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                RpcError::Unreachable(format!("HTTP {status} from {}", shown_url(&self.endpoint)))
            } else {
                RpcError::Protocol(format!(
                    "HTTP {status} from {}: is this Odoo's URL?",
                    shown_url(&self.endpoint)
                ))
            });
        }
        let body = read_capped(response).await?;
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            RpcError::Protocol(format!(
                "{} answered something else than JSON",
                shown_url(&self.endpoint)
            ))
        })?;
        if let Some(error) = answer.get("error") {
            let data = error.get("data");
            let name = data
                .and_then(|d| d.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("an error");
            let message = data
                .and_then(|d| d.get("message"))
                .or_else(|| error.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            if name == "odoo.exceptions.AccessDenied" {
                self.uid.lock().take();
                return Err(self.credentials_error());
            }
            return Err(RpcError::Odoo {
                name: name.to_string(),
                message: message.to_string(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Protocol("an answer with neither result nor error".into()))
    }

    fn credentials_error(&self) -> RpcError {
        RpcError::Credentials {
            login: self.credentials.login.clone(),
            database: self.credentials.database.clone(),
        }
    }

    /// Odoo's version (`common.version`): `server_version`, `server_serie`, …
    pub async fn version(&self) -> Result<Value, RpcError> {
        self.call("common", "version", json!([])).await
    }

    /// Logs in (`common.authenticate`) and keeps the user id.
    pub async fn authenticate(&self) -> Result<i64, RpcError> {
        let c = &self.credentials;
        let answer = self
            .call(
                "common",
                "authenticate",
                json!([c.database, c.login, c.api_key, {}]),
            )
            .await?;
        match answer.as_i64() {
            Some(uid) if uid > 0 => {
                *self.uid.lock() = Some(uid);
                Ok(uid)
            }
            _ => Err(self.credentials_error()),
        }
    }

    async fn uid(&self) -> Result<i64, RpcError> {
        let known = *self.uid.lock();
        match known {
            Some(uid) => Ok(uid),
            None => self.authenticate().await,
        }
    }

    /// `object.execute_kw(db, uid, key, model, method, args, kwargs)`.
    pub async fn execute_kw(
        &self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, RpcError> {
        let uid = self.uid().await?;
        let c = &self.credentials;
        self.call(
            "object",
            "execute_kw",
            json!([c.database, uid, c.api_key, model, method, args, kwargs]),
        )
        .await
    }

    /// The ids of `model` matching `domain`, archived records included, in `order`.
    pub async fn search(
        &self,
        model: &str,
        domain: Value,
        order: &str,
        limit: u32,
    ) -> Result<Vec<i64>, RpcError> {
        let answer = self
            .execute_kw(
                model,
                "search",
                json!([domain]),
                json!({"order": order, "limit": limit, "context": read_context()}),
            )
            .await?;
        let ids = answer
            .as_array()
            .ok_or_else(|| RpcError::Protocol(format!("{model}.search answered no list")))?;
        ids.iter()
            .map(|id| {
                id.as_i64()
                    .ok_or_else(|| RpcError::Protocol(format!("{model}.search answered {id}")))
            })
            .collect()
    }

    /// Which of `ids` Odoo has, archived records included.
    pub async fn existing(&self, model: &str, ids: &[i64]) -> Result<Vec<i64>, RpcError> {
        let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        self.search(model, json!([["id", "in", ids]]), "id asc", limit)
            .await
    }

    /// `fields` of those of `ids` Odoo has, as [`Client::search_read`] gives them.
    pub async fn read_ids(
        &self,
        model: &str,
        ids: &[i64],
        fields: &[String],
    ) -> Result<Vec<Map<String, Value>>, RpcError> {
        let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        self.search_read(model, json!([["id", "in", ids]]), fields, "id asc", limit)
            .await
    }

    /// How many records of `model` match `domain`, archived ones included.
    pub async fn search_count(&self, model: &str, domain: Value) -> Result<u64, RpcError> {
        let answer = self
            .execute_kw(
                model,
                "search_count",
                json!([domain]),
                json!({"context": read_context()}),
            )
            .await?;
        answer
            .as_u64()
            .ok_or_else(|| RpcError::Protocol(format!("{model}.search_count answered {answer}")))
    }

    /// `fields` of the records of `model` matching `domain`, archived ones included, in `order`,
    /// many2one values as bare ids (`load: null`, as a webhook has them).
    pub async fn search_read(
        &self,
        model: &str,
        domain: Value,
        fields: &[String],
        order: &str,
        limit: u32,
    ) -> Result<Vec<Map<String, Value>>, RpcError> {
        let answer = self
            .execute_kw(
                model,
                "search_read",
                json!([domain]),
                json!({"fields": fields, "order": order, "limit": limit, "load": null,
                       "context": read_context()}),
            )
            .await?;
        let records = match answer {
            Value::Array(records) => records,
            _ => {
                return Err(RpcError::Protocol(format!(
                    "{model}.search_read answered no list"
                )));
            }
        };
        records
            .into_iter()
            .map(|record| match record {
                Value::Object(record) => Ok(record),
                other => Err(RpcError::Protocol(format!(
                    "{model}.search_read answered {other} for a record"
                ))),
            })
            .collect()
    }
}

/// Largest answer read from Odoo: far above a page of records, far below what would hurt.
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The answer's body, refused beyond [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, RpcError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(RpcError::Protocol(format!(
                        "an answer larger than {} MiB: lower `odoo.page_size`",
                        MAX_ANSWER_BYTES >> 20
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(RpcError::Unreachable(describe(&e))),
        }
    }
}

/// A transport error without the request (whose body holds the key).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    match e.url() {
        Some(url) => format!("{what} ({})", shown_url(url.as_str())),
        None => what.to_string(),
    }
}
