//! `GET /api/v2/sync/stream`: the feed as Server-Sent Events.

use std::time::Duration;

use serde_json::{Value, json};
use smartsync_tests::{TestServer, event_ids, item, session};

/// Reads Server-Sent Events frames off a streaming response.
struct Frames {
    response: reqwest::Response,
    buffer: String,
}

impl Frames {
    /// The next frame (the lines before a blank line), within `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame = self.buffer[..end].to_string();
                self.buffer.drain(..end + 2);
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            let bytes = chunk.expect("stream read")?;
            self.buffer.push_str(&String::from_utf8_lossy(&bytes));
        }
    }

    /// The next event with data: (id, data), skipping heartbeats.
    async fn event(&mut self) -> (String, Value) {
        loop {
            let frame = self
                .next(Duration::from_secs(10))
                .await
                .expect("an event in time");
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim_start().to_string())
            };
            if let Some(data) = field("data") {
                let data: Value = serde_json::from_str(&data).expect("data is JSON");
                return (field("id").unwrap_or_default(), data);
            }
        }
    }
}

async fn open(server: &TestServer, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = server
        .client
        .get(format!("{}?{query}", server.url("/api/v2/sync/stream")))
        .header("X-Session-Id", session(42));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("open stream")
}

const DRIVER: &str = "user_id=42&device_id=rn-1&app_type=delivery_app";

#[tokio::test]
async fn batches_arrive_as_events_and_resume_from_last_event_id() {
    let server = TestServer::start().await;
    server
        .ingest_ok(json!([
            item("stock.picking", 1, "create"),
            item("sale.order", 2, "create")
        ]))
        .await;
    let response = open(&server, DRIVER, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut frames = Frames {
        response,
        buffer: String::new(),
    };
    let (first_id, first) = frames.event().await;
    assert_eq!(event_ids(&first), vec![1]);
    assert_eq!(first["next_sync_token"], first_id);

    // Live: a picking committed while the stream is open arrives as the next event.
    server
        .ingest_ok(json!([item("stock.picking", 3, "write")]))
        .await;
    let (second_id, second) = frames.event().await;
    assert_eq!(event_ids(&second), vec![3]);
    drop(frames);

    // Disconnected: more events; reconnecting with the last id gets exactly what came after.
    server
        .ingest_ok(json!([
            item("stock.picking", 4, "write"),
            item("stock.picking", 5, "unlink")
        ]))
        .await;
    let mut frames = Frames {
        response: open(&server, DRIVER, Some(&second_id)).await,
        buffer: String::new(),
    };
    let (_, resumed) = frames.event().await;
    assert_eq!(event_ids(&resumed), vec![4, 5]);
    drop(frames);

    // An older id replays from there (at-least-once for a client that lost events).
    let mut frames = Frames {
        response: open(&server, DRIVER, Some(&first_id)).await,
        buffer: String::new(),
    };
    let (_, replayed) = frames.event().await;
    assert_eq!(event_ids(&replayed), vec![3, 4, 5]);
    drop(frames);

    // The stream moved the device: a pull finds nothing new.
    let pull = server
        .pull_ok(
            &session(42),
            &json!({"user_id": 42, "device_id": "rn-1", "app_type": "delivery_app"}),
        )
        .await;
    assert_eq!(pull["events"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats() {
    let server = TestServer::start_with(|c| c.sync.stream_heartbeat_secs = 1).await;
    let mut frames = Frames {
        response: open(&server, DRIVER, None).await,
        buffer: String::new(),
    };
    let frame = frames
        .next(Duration::from_secs(5))
        .await
        .expect("a heartbeat");
    assert!(frame.starts_with(':'), "{frame:?}");
    server.stop().await;
}

#[tokio::test]
async fn streams_are_authenticated_like_pulls() {
    let server = TestServer::start().await;
    let anonymous = server
        .client
        .get(format!("{}?{DRIVER}", server.url("/api/v2/sync/stream")))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    let other_user = server
        .client
        .get(format!("{}?{DRIVER}", server.url("/api/v2/sync/stream")))
        .header("X-Session-Id", session(5))
        .send()
        .await
        .expect("send");
    assert_eq!(other_user.status(), 403);
    let bad_token = open(&server, DRIVER, Some("forged")).await;
    assert_eq!(bad_token.status(), 400);
    let missing = open(&server, "user_id=42&device_id=rn-1", None).await;
    assert_eq!(missing.status(), 422);
    // A browser's EventSource cannot send headers: the session may be in the query.
    server
        .ingest_ok(json!([item("stock.picking", 1, "create")]))
        .await;
    let response = server
        .client
        .get(format!(
            "{}?{DRIVER}&session_id=session-42",
            server.url("/api/v2/sync/stream")
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut frames = Frames {
        response,
        buffer: String::new(),
    };
    assert_eq!(event_ids(&frames.event().await.1), vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_lost_in_transit_is_sent_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start_with(|c| c.sync.default_limit = 1000).await;
    // 600 pickings of 20 KB: a 12 MB batch, more than the sockets' buffers hold.
    for batch in 0..30 {
        let events: Vec<Value> = (1..=20)
            .map(|i| {
                json!({"model": "stock.picking", "record_id": batch * 20 + i, "event": "write",
                       "payload": {"note": "x".repeat(20_000)}})
            })
            .collect();
        server.ingest_ok(json!(events)).await;
    }
    let addr = server.base().trim_start_matches("http://").to_string();
    let mut cut = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    cut.write_all(
        format!(
            "GET /api/v2/sync/stream?{DRIVER} HTTP/1.1\r\nHost: x\r\nX-Session-Id: {}\r\n\r\n",
            session(42)
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    // The phone reads the first 64 KiB of the batch, then loses its connection.
    let mut first = vec![0u8; 64 * 1024];
    cut.read_exact(&mut first).await.expect("the stream begins");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    drop(cut);

    // Its next pull answers the same events.
    let pull = json!({"user_id": 42, "device_id": "rn-1", "app_type": "delivery_app",
                      "limit": 1000});
    let again = server.pull_ok(&session(42), &pull).await;
    assert_eq!(event_ids(&again), (1..=600).collect::<Vec<i64>>());

    // A batch read whole moves the device: after it, a pull finds nothing.
    let mut frames = Frames {
        response: open(&server, DRIVER, None).await,
        buffer: String::new(),
    };
    server
        .ingest_ok(json!([item("stock.picking", 7, "write")]))
        .await;
    let (_, live) = frames.event().await;
    assert_eq!(event_ids(&live), vec![601]);
    // The position moves just after the batch is written out; a pull waits for the stream's
    // hold on the device, then finds nothing new.
    drop(frames);
    let after = server.pull_ok(&session(42), &pull).await;
    assert_eq!(event_ids(&after), Vec::<i64>::new());
    server.stop().await;
}
