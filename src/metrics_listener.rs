//! `GET /metrics` in Prometheus text format, on its own listener
//! (`BILLING_METRICS_ADDR`) so that it is never exposed with the public
//! webhook port. It is served by the same hardened HTTP/1.1 listener.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use tokio::net::TcpListener;

use crate::http_listener::{self, ListenerLimits};
use crate::service::Service;

/// How often histogram samples are folded in between scrapes, so that
/// memory stays flat however rarely Prometheus comes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    service: Service,
    shutdown: impl Future<Output = ()>,
) {
    let upkeep = handle.clone();
    let fold = async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    };
    let served = http_listener::serve(
        listener,
        router(handle, service),
        ListenerLimits::default(),
        shutdown,
    );
    tokio::select! {
        () = served => {}
        () = fold => {}
    }
}

/// The content type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
struct Exporter {
    handle: PrometheusHandle,
    service: Service,
}

fn router(handle: PrometheusHandle, service: Service) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(Exporter { handle, service })
}

async fn render(State(exporter): State<Exporter>) -> impl IntoResponse {
    exporter.service.sample_gauges().await;
    ([(CONTENT_TYPE, TEXT_FORMAT)], exporter.handle.render())
}
