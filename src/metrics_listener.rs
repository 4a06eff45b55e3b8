//! `GET /metrics` in Prometheus text format, on its own listener
//! (`BILLING_METRICS_ADDR`) so that it is never exposed with the public
//! webhook port. It is served by the same hardened HTTP/1.1 listener.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::service::Service;

/// The content type of Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
struct Exporter {
    handle: PrometheusHandle,
    service: Service,
}

pub fn router(handle: PrometheusHandle, service: Service) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(Exporter { handle, service })
}

async fn render(State(exporter): State<Exporter>) -> impl IntoResponse {
    exporter.service.sample_gauges().await;
    // Histograms are kept in buckets that upkeep folds in; at each scrape
    // is often enough, as nothing else reads them.
    exporter.handle.run_upkeep();
    ([(CONTENT_TYPE, TEXT_FORMAT)], exporter.handle.render())
}
