//! The HTTP/1.1 listener for the Stripe webhook port, hardened for the
//! open internet: anyone can connect to it, so no client may hold it open.
//!
//! | limit | setting | default |
//! | --- | --- | --- |
//! | request headers must arrive within; also how long a kept-alive connection may sit idle (hyper starts the timer whenever the connection waits for a request) | `BILLING_WEBHOOK_HEADER_TIMEOUT_MS` | 10 s |
//! | the whole body must arrive within (a deadline, not a per-read timer, so a trickle cannot outlast it) | `BILLING_WEBHOOK_BODY_TIMEOUT_MS` | 10 s |
//! | open connections; beyond it new ones wait in the kernel's backlog, unaccepted, holding no descriptor of ours | `BILLING_WEBHOOK_MAX_CONNECTIONS` | 256 |
//! | requests being handled; beyond it 503 at once (Stripe retries) | `BILLING_WEBHOOK_MAX_IN_FLIGHT` | 64 |
//! | one request, end to end | fixed | 30 s, then 503 |
//!
//! Connections get TCP_NODELAY (answers are small). On shutdown the
//! listener stops accepting, lets requests in flight finish, and closes
//! idle connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::timeout::{RequestBodyDeadlineLayer, TimeoutLayer};

/// The longest one request may take, its handler's database write
/// included; a stuck request answers 503 so that Stripe retries it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After a failed accept (out of descriptors, say), wait this long before
/// the next, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_requests_in_flight: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_requests_in_flight: 64,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (StatusCode::SERVICE_UNAVAILABLE, "busy, try again")
            }))
            .load_shed()
            .concurrency_limit(limits.max_requests_in_flight.max(1))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                REQUEST_TIMEOUT,
            ))
            .layer(RequestBodyDeadlineLayer::new(limits.body_timeout)),
    );
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: at the cap, connections stay in the backlog.
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                tracing::warn!(%error, "accepting a webhook connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a webhook connection");
        }
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts and clients going away are routine here.
                tracing::debug!(%error, "webhook connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook requests still in flight at shutdown were dropped");
    }
}
