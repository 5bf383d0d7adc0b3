//! The HTTP surface: routes, the layers around them, and request parsing shared by handlers.

mod admin;
mod delivered;
mod health;
mod ingest;
mod serve;
mod sync;
mod timeouts;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header,
};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::identity::Identity;

pub use delivered::{OnDelivered, OnPartDelivered};
pub use serve::{Limits, serve};
pub use timeouts::Timeouts;

pub const SESSION_HEADER: &str = "x-session-id";

/// The whole HTTP surface, ready for [`serve`].
///
/// The layers wrap the router as a whole, not each route: a request then clones one router
/// handle instead of a stack of boxed per-route services, which a long-polling pull would hold
/// for as long as it waits.
pub fn router(
    app: Arc<App>,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let server = &app.config.server;
    let enabled = server.compression;
    let compression = CompressionLayer::new().gzip(true).compress_when(
        SizeAbove::new(server.compression_min_bytes)
            .and(NotForContentType::const_new("text/event-stream"))
            .and(move |_: StatusCode, _: Version, _: &HeaderMap, _: &Extensions| enabled),
    );
    let layers = tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(LogRequests))
        .layer(cors(&server.cors_origins))
        .layer(compression)
        .layer(DefaultBodyLimit::max(server.max_body_bytes));
    let routes = Router::new()
        .merge(sync::router())
        .merge(ingest::router())
        .merge(health::router())
        .merge(admin::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app);
    layers.service(routes)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// Logs each request without its query string (the webhook's token travels there) and
/// without headers (sessions and bearer tokens travel there).
///
/// A plain service rather than `axum::middleware::from_fn`: that one boxes the request's parts
/// and a clone of every service inside it for each request, which a long-polling pull holds for
/// as long as it waits. This keeps the method, the path and the start time.
#[derive(Clone)]
struct LogRequests<S>(S);

impl<S> tower::Service<Request> for LogRequests<S>
where
    S: tower::Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.0.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            let response = response.into_response();
            let status = response.status().as_u16();
            let micros = started.elapsed().as_micros() as u64;
            // A 503 (a failed plugin, Odoo or the disk unavailable, a shutdown) is logged once
            // where it arises, not for every request it turns away.
            if status >= 500 && status != 503 {
                tracing::warn!(%method, %path, status, micros, "request failed");
            } else {
                tracing::debug!(%method, %path, status, micros, "request");
            }
            Ok(response)
        })
    }
}

/// CORS for the configured origins. `http://host:*` matches any port of that host.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Arc<[String]> = origins.iter().cloned().collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|origin| origins.iter().any(|p| origin_matches(p, origin)))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            HeaderName::from_static(SESSION_HEADER),
            header::CONTENT_TYPE,
        ])
        .max_age(Duration::from_secs(600))
}

pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" || pattern == origin {
        return true;
    }
    match pattern.strip_suffix(":*") {
        Some(base) => {
            origin == base
                || origin
                    .strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .is_some_and(|port| {
                        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                    })
        }
        None => false,
    }
}

/// The caller's identity, from `X-Session-Id`.
async fn identify(app: &App, headers: &HeaderMap) -> ApiResult<Arc<Identity>> {
    let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    Ok(app.auth.verify(session).await?)
}

/// The body, or the error a client should see when it could not be read.
fn body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if let Some(timed_out) = timeouts::BodyTimedOut::caused(&rejection) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("{timed_out} (server.body_timeout_secs)"),
            )
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than server.max_body_bytes",
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// Parses a JSON body: bad syntax is 400 `invalid_json`, a bad value 422 naming its field.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de);
    if value.is_ok()
        && let Err(e) = de.end()
    {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        ));
    }
    value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                ApiError::invalid_field(field_of(&path, &message), strip_position(&message))
            }
            _ => ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })
}

/// The full name of the field an error is about: serde names the parent of a missing field.
fn field_of(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if path.is_empty() => name.to_string(),
        Some(name) => format!("{path}.{name}"),
        None => path.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_by_pattern() {
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:3000"
        ));
        assert!(origin_matches("http://localhost:*", "http://localhost"));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost.evil.com"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "http://localhost:3000.evil.com"
        ));
        assert!(!origin_matches(
            "http://localhost:*",
            "https://localhost:3000"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.com:8443"
        ));
        assert!(origin_matches("*", "https://anything.example"));
    }

    #[test]
    fn field_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            user_id: i64,
            limit: Option<i64>,
        }
        let err = parse_json::<Body>(br#"{"limit": 5}"#).expect_err("missing");
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.to_string(),
            "422 invalid_request: user_id: missing field `user_id`"
        );
        let err = parse_json::<Body>(br#"{"user_id": 1, "limit": "ten"}"#).expect_err("type");
        assert!(err.to_string().contains("limit: invalid type"), "{err}");
        let err = parse_json::<Body>(br#"{"user_id": 1,"#).expect_err("syntax");
        assert_eq!(err.code(), "invalid_json");
        let err = parse_json::<Body>(br#"{"user_id": 1} trailing"#).expect_err("trailing");
        assert_eq!(err.code(), "invalid_json");
    }
}
