//! Accepting connections and serving HTTP/1.1 on each.
//!
//! This does what `axum::serve` does, with hyper's HTTP/1 connection built directly. axum's
//! reads a connection's first bytes itself, to tell HTTP/1 from HTTP/2 (which this server does
//! not speak either way); hyper then meets those bytes apart from the rest of the request, and
//! its read buffer grows to twice its starting size (16 KiB instead of 8) for the life of the
//! connection. A long-polling pull holds its connection for up to a minute, so that buffer is
//! most of what a waiting pull costs (see BENCHMARKS.md, live sync).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use crate::util::stopped;

/// Serves `service` on every connection `listener` accepts, until `stop` is set. Then it stops
/// accepting, lets each connection finish the request it is answering (keep-alive connections
/// close after it), and returns once every connection has closed.
pub async fn serve<S>(listener: TcpListener, service: S, mut stop: watch::Receiver<bool>)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Every connection task holds a receiver; `closed()` resolves once the last one is gone.
    let (all_closed, open_connection) = watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stopped(&mut stop) => break,
        };
        let service = service.clone();
        let stop = stop.clone();
        let open = open_connection.clone();
        tokio::spawn(async move {
            serve_connection(stream, service, stop).await;
            drop(open);
        });
    }
    drop(listener);
    drop(open_connection);
    all_closed.closed().await;
}

/// The next connection. Errors that concern one connection (it was reset before it was
/// accepted) are skipped; others, such as running out of file descriptors, are logged and
/// retried after a pause, as the listener may recover once connections close.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
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

async fn serve_connection<S>(stream: TcpStream, service: S, mut stop: watch::Receiver<bool>)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let service = TowerToHyperService::new(
        service.map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
    );
    // Upgrades as axum::serve allows them, for a route that may one day answer 101.
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
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
        let mut server = tokio::spawn(serve(listener, router, stopped));

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
