//! The service's metrics: every name, its help text, and the recorder that
//! renders them in Prometheus text format for `/metrics`
//! (`BILLING_METRICS_ADDR`).
//!
//! Names follow Prometheus conventions (`billing_` prefix, `_total` for
//! counters, `_seconds` for durations) and labels stay low-cardinality:
//! a method, an endpoint, an outcome, never an organization or user id.
//!
//! The recorder is process-wide, as the `metrics` facade is: two services
//! embedded in one process (as some tests do) share their counters. With
//! no metrics address the recorder is never installed and every
//! instrument is a no-op, so the hot path pays nothing for it.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const GRPC_REQUESTS: &str = "billing_grpc_requests_total";
pub const GRPC_DURATION: &str = "billing_grpc_request_duration_seconds";
pub const LOAD_SHED: &str = "billing_load_shed_total";
pub const CACHE_ORGANIZATIONS: &str = "billing_entitlement_cache_organizations";
pub const CACHE_VERSION_LAG: &str = "billing_entitlement_cache_version_lag";
pub const CACHE_STALE_SECONDS: &str = "billing_entitlement_cache_stale_seconds";
pub const INBOX_PENDING: &str = "billing_inbox_pending_events";
pub const INBOX_OLDEST_PENDING_AGE: &str = "billing_inbox_oldest_pending_age_seconds";
pub const INBOX_PARKED: &str = "billing_inbox_parked_events";
pub const INBOX_APPLIED: &str = "billing_inbox_events_applied_total";
pub const INBOX_APPLY_DURATION: &str = "billing_inbox_apply_duration_seconds";
pub const STRIPE_REQUESTS: &str = "billing_stripe_requests_total";
pub const STRIPE_DURATION: &str = "billing_stripe_request_duration_seconds";
pub const USAGE_DEBITS: &str = "billing_usage_debits_total";
pub const CREDIT_HOLDS: &str = "billing_credit_holds_total";
pub const USAGE_BATCH_SIZE: &str = "billing_usage_group_commit_reports";
pub const WEBHOOK_DELIVERIES: &str = "billing_webhook_deliveries_total";
pub const WEBHOOK_DELIVERY_DURATION: &str = "billing_webhook_delivery_duration_seconds";
pub const WEBHOOK_PAUSES: &str = "billing_webhook_endpoint_pauses_total";
pub const WEBHOOK_PENDING: &str = "billing_webhook_pending_deliveries";
pub const WEBHOOK_OLDEST_PENDING_AGE: &str = "billing_webhook_oldest_pending_age_seconds";
pub const WEBHOOK_PAUSED_ENDPOINTS: &str = "billing_webhook_paused_endpoints";
pub const DB_CONNECTIONS: &str = "billing_db_pool_connections";
pub const DB_MAX_CONNECTIONS: &str = "billing_db_pool_max_connections";

/// Latency buckets from 100 µs (a check answered from memory) to 30 s
/// (the call timeout).
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Reports per usage group commit: one alone up to a full batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The installed recorder's handle, or why it could not be installed.
static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process's recorder and describes every metric, once:
/// callers at the same time (two services built together) wait for the
/// first and get its handle, instead of racing to set the global recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(USAGE_BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| error.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn describe() {
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC calls finished, by service, method and status code"
    );
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "gRPC call latency, by service and method (a stream: until it ends)"
    );
    describe_counter!(
        LOAD_SHED,
        "calls refused with RESOURCE_EXHAUSTED before they started, by class"
    );
    describe_gauge!(
        CACHE_ORGANIZATIONS,
        "organizations held by the in-memory entitlement state"
    );
    describe_gauge!(
        CACHE_VERSION_LAG,
        "state versions the database has committed that the entitlement state has not applied yet"
    );
    describe_gauge!(
        CACHE_STALE_SECONDS,
        Unit::Seconds,
        "how long the entitlement state has been unable to follow changes (0 while following)"
    );
    describe_gauge!(INBOX_PENDING, "Stripe events stored and not yet applied");
    describe_gauge!(
        INBOX_OLDEST_PENDING_AGE,
        Unit::Seconds,
        "age of the oldest Stripe event not yet applied (0 when none waits)"
    );
    describe_gauge!(
        INBOX_PARKED,
        "Stripe events parked after their attempts were spent, for an operator"
    );
    describe_counter!(
        INBOX_APPLIED,
        "Stripe events finished by the inbox, by outcome"
    );
    describe_histogram!(
        INBOX_APPLY_DURATION,
        Unit::Seconds,
        "time to apply one claimed batch of Stripe events for one subject"
    );
    describe_counter!(
        STRIPE_REQUESTS,
        "requests to Stripe's API, by endpoint and outcome, after the client's own retries"
    );
    describe_histogram!(
        STRIPE_DURATION,
        Unit::Seconds,
        "Stripe request latency, by endpoint, retries included"
    );
    describe_counter!(USAGE_DEBITS, "usage reports posted as credit debits");
    describe_counter!(
        CREDIT_HOLDS,
        "credit holds, by what happened to them (reserved, settled, released)"
    );
    describe_histogram!(
        USAGE_BATCH_SIZE,
        "usage reports committed together in one group commit"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "outbound webhook delivery attempts, by outcome (delivered, retrying, given_up)"
    );
    describe_histogram!(
        WEBHOOK_DELIVERY_DURATION,
        Unit::Seconds,
        "outbound webhook attempt latency, connecting included"
    );
    describe_counter!(
        WEBHOOK_PAUSES,
        "webhook endpoints paused after failing longer than allowed"
    );
    describe_gauge!(
        WEBHOOK_PENDING,
        "webhook deliveries queued and not yet delivered or given up"
    );
    describe_gauge!(
        WEBHOOK_OLDEST_PENDING_AGE,
        Unit::Seconds,
        "age of the oldest pending webhook delivery (0 when none waits)"
    );
    describe_gauge!(WEBHOOK_PAUSED_ENDPOINTS, "webhook endpoints paused");
    describe_gauge!(
        DB_CONNECTIONS,
        "database pool connections, by state (in_use, idle)"
    );
    describe_gauge!(DB_MAX_CONNECTIONS, "the database pool's cap");
}
