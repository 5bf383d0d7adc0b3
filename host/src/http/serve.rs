//! Accepting connections and serving HTTP/1.1 on each.
//!
//! This does what `axum::serve` does, with hyper's HTTP/1 connection built directly. axum's
//! reads a connection's first bytes itself, to tell HTTP/1 from HTTP/2 (which this server does
//! not speak either way); hyper then meets those bytes apart from the rest of the request, and
//! its read buffer grows to twice its starting size (16 KiB instead of 8) for the life of the
//! connection. A long-polling pull holds its connection for up to a minute, so that buffer is
//! most of what a waiting pull costs (see BENCHMARKS.md, live sync).
//!
//! It also bounds what clients can hold: connections that stall while sending a request are
//! closed ([`super::timeouts`]), and past [`Limits::max_connections`] (or
//! [`Limits::max_connections_per_ip`] from one address) a new connection is answered 503
//! `too_many_connections` and closed, so that the process keeps descriptors for the database,
//! the plugins and the clients it serves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use super::timeouts::{Activity, AnswerBody, Expiry, TimedBody, TimedIo, Timeouts};
use super::{OnDelivered, OnPartDelivered};
use crate::util::stopped;

/// What one server lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeouts: Timeouts,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address (0: no limit of its own).
    pub max_connections_per_ip: usize,
}

/// Connections being turned away at once; more are closed without an answer.
const MAX_REJECTING: usize = 64;

/// Serves `service` on every connection `listener` accepts, until `stop` is set. Then it stops
/// accepting, lets each connection finish the request it is answering (keep-alive connections
/// close after it), and returns once every connection has closed.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Every connection task holds a receiver; `closed()` resolves once the last one is gone.
    let (all_closed, open_connection) = watch::channel(());
    let counts = Arc::new(Counts::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stopped(&mut stop) => break,
        };
        let Some(slot) = Slot::take(&counts, &limits, peer.ip()) else {
            reject(stream, &counts, &limits);
            continue;
        };
        let service = service.clone();
        let stop = stop.clone();
        let open = open_connection.clone();
        tokio::spawn(async move {
            serve_connection(stream, service, limits.timeouts, stop).await;
            drop(slot);
            drop(open);
        });
    }
    drop(listener);
    drop(open_connection);
    all_closed.closed().await;
}

/// How many connections are open, in all and per address, and how many are being turned away.
#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    /// Kept only when a per-address limit is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    rejecting: AtomicUsize,
}

/// One connection's place among the open ones, given back when dropped.
struct Slot {
    counts: Arc<Counts>,
    /// The address it is counted under, when a per-address limit is set.
    ip: Option<IpAddr>,
}

impl Slot {
    /// A place for a connection from `ip`, unless the limits are reached.
    fn take(counts: &Arc<Counts>, limits: &Limits, ip: IpAddr) -> Option<Slot> {
        let open = counts.open.fetch_add(1, Ordering::AcqRel);
        // Counted from here on: when it is refused, dropping it gives the place back.
        let mut slot = Slot {
            counts: counts.clone(),
            ip: None,
        };
        if open >= limits.max_connections {
            return None;
        }
        if limits.max_connections_per_ip > 0 {
            let mut per_ip = counts.per_ip.lock();
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= limits.max_connections_per_ip {
                return None;
            }
            *count += 1;
            slot.ip = Some(ip);
        }
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.counts.per_ip.lock();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Answers a connection over the limits with 503 `too_many_connections` and closes it. The
/// answer is written before the request is read; what the client sent is then read and thrown
/// away for a moment, so that closing does not reset the connection before the client has read
/// the answer. At most [`MAX_REJECTING`] are answered at once; past that they are closed at once.
fn reject(mut stream: TcpStream, counts: &Arc<Counts>, limits: &Limits) {
    if counts.rejecting.fetch_add(1, Ordering::AcqRel) >= MAX_REJECTING {
        counts.rejecting.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    tracing::debug!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        "connection turned away: too many connections"
    );
    let counts = counts.clone();
    tokio::spawn(async move {
        let answer = too_many_connections();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut left: usize = 64 * 1024;
            while left > 0 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        counts.rejecting.fetch_sub(1, Ordering::AcqRel);
    });
}

/// The whole HTTP/1.1 answer to a connection over the limits.
fn too_many_connections() -> String {
    let body = r#"{"status":"error","code":"too_many_connections","message":"the server holds as many connections as it may (server.max_connections, server.max_connections_per_ip); retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The next connection. Errors that concern one connection (it was reset before it was
/// accepted) are skipped; others, such as running out of file descriptors, are logged and
/// retried after a pause, as the listener may recover once connections close.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let activity = Activity::new(timeouts);
    let started = activity.clone();
    let answered = activity.clone();
    let mut expiry = std::pin::pin!(Expiry::new(activity.clone()));
    let service = TowerToHyperService::new(
        service
            .map_request(move |request: hyper::Request<Incoming>| {
                started.request_started();
                request.map(|body| Body::new(TimedBody::new(body, timeouts.body)))
            })
            .map_response(move |mut response: Response| {
                let delivered = response.extensions_mut().remove::<OnDelivered>();
                let parts = response.extensions_mut().remove::<OnPartDelivered>();
                response.map(|body| AnswerBody::new(body, answered.clone(), delivered, parts))
            }),
    );
    // Upgrades as axum::serve allows them, for a route that may one day answer 101.
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(TimedIo::new(stream, activity)), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = expiry.as_mut() => {
                // No request is in progress: nothing is lost by closing it.
                tracing::trace!("connection stalled before or between requests; closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::routing::get;
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use tokio::sync::Notify;

    use super::*;

    type Client = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

    /// Generous timeouts, and these connection limits.
    fn limits(max_connections: usize, max_connections_per_ip: usize) -> Limits {
        Limits {
            timeouts: Timeouts {
                header: Duration::from_secs(30),
                body: Duration::from_secs(30),
                idle: Duration::from_secs(30),
                send: Duration::from_secs(30),
            },
            max_connections,
            max_connections_per_ip,
        }
    }

    /// Serves a router with `/quick` on `limits`; answers its address and its stop switch.
    async fn serve_quick(limits: Limits) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let router = Router::new().route("/quick", get(|| async { "quick" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, router, limits, stopped));
        (addr, stop)
    }

    /// Connects to `addr` from the loopback address `from`.
    async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .expect("bind the client's address");
        socket.connect(addr).await.expect("connect")
    }

    /// Sends `request` on `stream`, and answers what the server sends until it closes it.
    async fn ask(stream: &mut TcpStream, request: &[u8]) -> String {
        stream.write_all(request).await.expect("write");
        read_to_close(stream).await
    }

    /// What the server sends on `stream` until it closes it.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(stream, &mut received),
        )
        .await;
        assert!(read.is_ok(), "the connection was not closed");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_answered_503_and_closed() {
        let (addr, _stop) = serve_quick(limits(2, 0)).await;
        let mut first = connect(addr).await;
        let mut second = connect(addr).await;
        assert_eq!(
            get_body(&mut first, "/quick").await.expect("first"),
            "quick"
        );
        assert_eq!(
            get_body(&mut second, "/quick").await.expect("second"),
            "quick"
        );

        let mut third = TcpStream::connect(addr).await.expect("connect");
        let answer = ask(&mut third, b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["code"], "too_many_connections");

        // A closed connection gives its place back.
        drop(first);
        let served = async {
            loop {
                // Turned away (503) until the server has seen the first one close.
                let mut next = connect(addr).await;
                if let Ok(answer) = get_body(&mut next, "/quick").await
                    && answer == "quick"
                {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), served).await;
        assert_eq!(answer.expect("a place came free in time"), "quick");
        assert_eq!(
            get_body(&mut second, "/quick").await.expect("second"),
            "quick"
        );
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_of_an_endless_answer_is_let_go() {
        let endless = || async {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))
            });
            Body::new(http_body_util::StreamBody::new(chunks))
        };
        let router = Router::new().route("/endless", get(endless));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, stopped) = watch::channel(false);
        let mut quick_send = limits(100, 0);
        quick_send.timeouts.send = Duration::from_millis(300);
        tokio::spawn(serve(listener, router, quick_send, stopped));

        let mut reader = TcpStream::connect(addr).await.expect("connect");
        reader
            .write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Reads nothing while the server's writes wait, then finds the connection closed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut sink = vec![0u8; 1 << 20];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut reader, &mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server still sends to a client that stopped reading"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_receives_a_large_answer_whole() {
        const SIZE: usize = 8 << 20;
        let large = Bytes::from(vec![b'x'; SIZE]);
        let router = Router::new().route("/large", get(move || async move { large.clone() }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, stopped) = watch::channel(false);
        // The answer takes seconds to go out; the idle timeout counts only from then on.
        let mut quick_idle = limits(100, 0);
        quick_idle.timeouts.idle = Duration::from_millis(300);
        tokio::spawn(serve(listener, router, quick_idle, stopped));

        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(32 * 1024)
            .expect("small receive buffer");
        let mut reader = socket.connect(addr).await.expect("connect");
        reader
            .write_all(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut received = Vec::with_capacity(SIZE + 1024);
        let mut buf = vec![0u8; 32 * 1024];
        let read_all = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
                let body = received
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |at| received.len() - at - 4);
                if body >= SIZE {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
        .await;
        assert!(read_all.is_ok(), "reading took too long");
        let head_end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head");
        assert_eq!(
            received.len() - head_end - 4,
            SIZE,
            "the whole answer arrived"
        );
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_connection() {
        let (addr, _stop) = serve_quick(limits(100, 2)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(connect_from([127, 0, 0, 1], addr).await);
        }
        let mut third = connect_from([127, 0, 0, 1], addr).await;
        let answer = ask(&mut third, b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        // Another address is served.
        let mut other = connect_from([127, 0, 0, 2], addr).await;
        let answer = ask(
            &mut other,
            b"GET /quick HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }

    async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        client
    }

    async fn get_body(client: &mut Client, path: &str) -> Result<String, hyper::Error> {
        let request = hyper::Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .expect("request");
        let response = client.send_request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn stopping_finishes_requests_in_flight_and_closes_idle_connections() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let router = {
            let (release, entered) = (release.clone(), entered.clone());
            Router::new()
                .route("/quick", get(|| async { "quick" }))
                .route(
                    "/slow",
                    get(move || async move {
                        entered.notify_one();
                        release.notified().await;
                        "slow"
                    }),
                )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = watch::channel(false);
        let mut server = tokio::spawn(serve(listener, router, limits(100, 0), stopped));

        // One connection that never sends a request, one used once and left open, one with a
        // request in flight.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut idle = connect(addr).await;
        assert_eq!(get_body(&mut idle, "/quick").await.expect("quick"), "quick");
        let mut busy = connect(addr).await;
        let in_flight = tokio::spawn(async move { get_body(&mut busy, "/slow").await });
        entered.notified().await;

        stop.send_replace(true);
        // The request in flight holds the server up; the idle connection does not.
        let held = tokio::time::timeout(Duration::from_millis(200), &mut server).await;
        assert!(held.is_err(), "serve returned with a request in flight");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener still accepts after the stop"
        );
        release.notify_one();
        let answer = in_flight
            .await
            .expect("task")
            .expect("the request in flight is answered");
        assert_eq!(answer, "slow");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns once the request is answered")
            .expect("serve task");
        assert!(
            get_body(&mut idle, "/quick").await.is_err(),
            "the idle connection was closed"
        );
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut silent, &mut byte).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the silent connection was closed: {read:?}"
        );
    }
}
