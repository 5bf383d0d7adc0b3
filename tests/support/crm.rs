//! The external CRM the seed's background service mirrors Odoo into: it records every call.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path;
use axum::routing::post;
use serde_json::{Value, json};

use crate::spawn_router;

/// One call the CRM received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmCall {
    Upsert { resource: String, id: i64 },
    Delete { resource: String, id: i64 },
}

pub struct Crm {
    pub url: String,
    calls: Arc<Mutex<Vec<CrmCall>>>,
}

impl Crm {
    pub async fn start() -> Crm {
        let calls: Arc<Mutex<Vec<CrmCall>>> = Arc::default();
        let (upserts, deletes) = (calls.clone(), calls.clone());
        let router = Router::new().route(
            "/api/{resource}/{id}",
            post(
                move |Path((resource, id)): Path<(String, i64)>, body: String| {
                    let calls = upserts.clone();
                    async move {
                        // The service sends what it fetched from Odoo: at least the record's id.
                        let record: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        assert_eq!(record["id"], id, "upsert body names the record");
                        calls
                            .lock()
                            .expect("lock")
                            .push(CrmCall::Upsert { resource, id });
                        axum::Json(json!({"ok": true}))
                    }
                },
            )
            .delete(move |Path((resource, id)): Path<(String, i64)>| {
                let calls = deletes.clone();
                async move {
                    calls
                        .lock()
                        .expect("lock")
                        .push(CrmCall::Delete { resource, id });
                    axum::Json(json!({"ok": true}))
                }
            }),
        );
        Crm {
            url: spawn_router(router).await,
            calls,
        }
    }

    pub fn calls(&self) -> Vec<CrmCall> {
        self.calls.lock().expect("lock").clone()
    }
}
