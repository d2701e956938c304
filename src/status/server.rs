//! The status server's sockets: accepting connections under a cap, with header,
//! request and keep-alive timeouts, so that clients holding connections open can never
//! take the file descriptors and the threads the reconcile loop needs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower_service::Service as _;
use tracing::warn;

/// How long a client may take, and how many connections it may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the first byte of a request (or from the end of the previous answer, on a
    /// kept-alive connection) to the end of its header; an idle connection is closed
    /// after this too.
    pub header_timeout: Duration,
    /// From the end of the header to the answer, the body's upload included.
    pub request_timeout: Duration,
    /// Connections open at once. A connection beyond it closes the oldest one.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// The connections being served, oldest first, each with the bell that closes it.
#[derive(Default)]
struct Open {
    next: u64,
    connections: VecDeque<(u64, Arc<Notify>)>,
    shed: u64,
    warned: Option<Instant>,
}

impl Open {
    fn add(&mut self) -> (u64, Arc<Notify>) {
        let id = self.next;
        self.next += 1;
        let close = Arc::new(Notify::new());
        self.connections.push_back((id, close.clone()));
        (id, close)
    }

    fn remove(&mut self, id: u64) {
        self.connections.retain(|(i, _)| *i != id);
    }

    /// Closes the oldest connection; says so at most every ten seconds.
    fn shed_oldest(&mut self, cap: usize) {
        if let Some((_, close)) = self.connections.pop_front() {
            close.notify_one();
            self.shed += 1;
        }
        let quiet = self
            .warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if quiet {
            warn!(
                closed = self.shed,
                "the status server holds {cap} connections: closing the oldest for each new one"
            );
            self.warned = Some(Instant::now());
            self.shed = 0;
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true.
///
/// At most `limits.max_connections` connections are served at once: when a new one
/// comes, the oldest is closed (its socket an instant later, when its task runs), so a crowd of idle or slow clients cannot lock out the next
/// request (a probe of `/healthz`, an operator's `berth status`), and nothing waits in
/// a queue. Slow headers, idle keep-alive connections and slow bodies are cut at their
/// timeouts.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let max = limits.max_connections.max(1);
    let open = Arc::new(Mutex::new(Open::default()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                warn!("the status server failed to accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, close) = {
            let mut open = lock(&open);
            if open.connections.len() >= max {
                open.shed_oldest(max);
            }
            open.add()
        };
        let open = open.clone();
        let router = router.clone();
        let http = http.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let mut router = router.clone();
                async move {
                    let answer = router.call(request.map(Body::new));
                    match tokio::time::timeout(limits.request_timeout, answer).await {
                        Ok(answer) => answer,
                        Err(_) => Ok::<_, Infallible>(too_slow()),
                    }
                }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Dropping the connection closes its socket.
                _ = close.notified() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.request_timeout, connection).await;
                }
            }
            lock(&open).remove(id);
        });
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn too_slow() -> Response<Body> {
    let mut answer = Response::new(Body::from(
        "{\"error\":\"the request took too long to arrive\"}",
    ));
    *answer.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    answer
}
