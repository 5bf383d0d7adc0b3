//! What every endpoint shares: JSON errors, compression, health checks.

use std::io::Read;

use serde_json::{Value, json};
use smartsync_tests::{TestServer, item, session};

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = TestServer::start().await;
    let missing = server
        .client
        .get(server.url("/api/v3/nothing"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "error", "code": "not_found", "message": body["message"]})
    );
    let wrong = server
        .client
        .get(server.url("/api/v2/sync/pull"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 405);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["code"], "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn large_answers_are_gzipped_when_asked() {
    let server = TestServer::start().await;
    let events: Vec<Value> = (1..=50)
        .map(|i| {
            json!({"model": "sale.order", "record_id": i, "event": "write",
                        "payload": {"name": format!("S{i:05}"), "state": "sale"}})
        })
        .collect();
    server.ingest_ok(json!(events)).await;
    let body =
        json!({"user_id": 5, "device_id": "android-1", "app_type": "sales_app", "limit": 100});
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("X-Session-Id", session(5))
        .header("Accept-Encoding", "gzip")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    assert!(compressed.len() < text.len());
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["new_events_count"], 50);

    // Small answers, and clients that do not ask, get plain JSON.
    let plain = server.pull(&session(5), &body).await;
    assert!(plain.headers().get("content-encoding").is_none());
    server.stop().await;
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.server.compression = false).await;
    let events: Vec<Value> = (1..=50).map(|i| item("sale.order", i, "write")).collect();
    server.ingest_ok(json!(events)).await;
    let response = server
        .client
        .post(server.url("/api/v2/sync/pull"))
        .header("X-Session-Id", session(5))
        .header("Accept-Encoding", "gzip")
        .json(&json!({"user_id": 5, "device_id": "a", "app_type": "sales_app"}))
        .send()
        .await
        .expect("send");
    assert!(response.headers().get("content-encoding").is_none());
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    server.stop().await;
}

/// Reads what the server sends on `stream` until it closes the connection, or panics after
/// `limit`.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection is still open after {limit:?}");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn connections_that_stall_are_closed_and_slow_answers_are_not() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let server = TestServer::start_with(|c| {
        c.server.header_timeout_secs = 1;
        c.server.body_timeout_secs = 1;
        c.server.idle_timeout_secs = 3;
    })
    .await;
    let addr = server.base().trim_start_matches("http://").to_string();
    let session = session(5);
    let started = Instant::now();

    // Nothing sent, half a header, headers and part of a body.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut half_header = TcpStream::connect(&addr).await.expect("connect");
    half_header
        .write_all(b"POST /api/v2/sync/pull HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .expect("write");
    let mut half_body = TcpStream::connect(&addr).await.expect("connect");
    half_body
        .write_all(
            format!(
                "POST /api/v2/sync/pull HTTP/1.1\r\nHost: x\r\nX-Session-Id: {session}\r\n\
                 Content-Type: application/json\r\nContent-Length: 80\r\n\r\n{{\"user_id\": 5,"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    // Meanwhile a long-poll waits longer than every timeout.
    let mut polling = TcpStream::connect(&addr).await.expect("connect");
    let body = json!({"user_id": 5, "device_id": "d", "app_type": "sales_app", "wait": 3});
    let body = body.to_string();
    polling
        .write_all(
            format!(
                "POST /api/v2/sync/pull HTTP/1.1\r\nHost: x\r\nX-Session-Id: {session}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");

    let limit = Duration::from_secs(10);
    assert_eq!(read_until_closed(&mut silent, limit).await, "");
    assert_eq!(read_until_closed(&mut half_header, limit).await, "");
    let answer = read_until_closed(&mut half_body, limit).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");

    let waited = read_one_answer(&mut polling).await;
    assert!(waited.starts_with("HTTP/1.1 200"), "{waited}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the long-poll waited"
    );
    // Its connection then idles, and is closed after the idle timeout.
    let answered = Instant::now();
    assert_eq!(read_until_closed(&mut polling, limit).await, "");
    let idled = answered.elapsed();
    assert!(
        idled >= Duration::from_millis(2500),
        "closed after {idled:?}"
    );

    // A keep-alive connection idle for longer than the header timeout still serves.
    let mut kept = TcpStream::connect(&addr).await.expect("connect");
    for pause in [0, 1500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write on the kept connection");
        let answer = read_one_answer(&mut kept).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "after {pause} ms: {answer}"
        );
    }
    server.stop().await;
}

/// Reads one answer whose body is one JSON object.
async fn read_one_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !(received.ends_with(b"}") && received.windows(4).any(|w| w == b"\r\n\r\n")) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}
