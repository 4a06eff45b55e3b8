//! `/metrics`, read as Prometheus reads it (parsed with a Prometheus text
//! parser), shows each family moving after real calls: RPCs by method and
//! code with latency, the entitlement state, the inbox, Stripe requests,
//! usage and holds, and the database pool; and no label names an
//! organization.

use billing_service::grpc::proto::{self, BillingCycle};
use prometheus_parse::{Sample, Scrape, Value};
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe};

pub async fn scrape(app: &TestApp) -> Scrape {
    let response = reqwest::get(&app.metrics_url).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text format")
}

/// The samples of `name` whose labels include every pair of `labels`.
fn matching<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The one value of a counter or gauge (0 when it has not appeared yet).
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = matching(scrape, name, labels);
    assert!(
        found.len() <= 1,
        "{name} {labels:?}: {} samples",
        found.len()
    );
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{name} is not a single value: {other:?}"),
    }
}

/// How many observations a histogram holds (its `+Inf` bucket).
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = matching(scrape, name, labels);
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        Some(other) => panic!("{name} is not a histogram: {other:?}"),
    }
}

const ORG_ADMIN: (&str, &str) = ("service", "billing.v1.OrgAdminService");
const ENTITLEMENTS: (&str, &str) = ("service", "billing.v1.EntitlementService");

#[tokio::test]
async fn metrics_move_after_calls_with_low_cardinality_labels() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let before = scrape(&app).await;
    assert_eq!(
        value(&before, "billing_entitlement_cache_organizations", &[]),
        0.0
    );
    assert_eq!(value(&before, "billing_db_pool_max_connections", &[]), 5.0);

    // RPCs: created, checked three times (and once more to reserve
    // below), one refused for a bad id.
    let org = app.create_org("owner-1").await.id;
    for _ in 0..3 {
        app.check(&org, "owner-1").await;
    }
    expect_code(
        app.org_admin()
            .get_organization(request(
                As::Ops,
                proto::GetOrganizationRequest {
                    org_id: "nope".into(),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    // Stripe and the inbox: a checkout, paid, its events applied.
    app.subscribe(&stripe, &org, "owner-1", "teams", BillingCycle::Monthly, 3)
        .await;
    // Usage: credits granted, two debits (one replayed), a hold reserved.
    app.grant(&org, 5_000_000, "grant-1").await;
    app.record_usage(&org, "owner-1", 1_000, "use-1")
        .await
        .expect("debit");
    app.record_usage(&org, "owner-1", 1_000, "use-1")
        .await
        .expect("replay");
    let reserved = app
        .entitlements()
        .check_entitlement(request(
            As::Gateway,
            proto::CheckEntitlementRequest {
                org_id: org.clone(),
                user_id: "owner-1".into(),
                feature: "proxy".into(),
                model: Some("gpt-4o".into()),
                reserve_micros: Some(2_000),
                reservation_key: "hold-1".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("reserve")
        .into_inner();
    assert!(reserved.allowed, "{reserved:?}");

    let after = scrape(&app).await;
    let created = [ORG_ADMIN, ("method", "CreateOrganization"), ("code", "OK")];
    assert_eq!(value(&after, "billing_grpc_requests_total", &created), 1.0);
    let checks = [ENTITLEMENTS, ("method", "CheckEntitlement"), ("code", "OK")];
    assert_eq!(value(&after, "billing_grpc_requests_total", &checks), 4.0);
    let refused = [
        ORG_ADMIN,
        ("method", "GetOrganization"),
        ("code", "INVALID_ARGUMENT"),
    ];
    assert_eq!(value(&after, "billing_grpc_requests_total", &refused), 1.0);
    let check_latency = [ENTITLEMENTS, ("method", "CheckEntitlement")];
    assert_eq!(
        observations(
            &after,
            "billing_grpc_request_duration_seconds",
            &check_latency
        ),
        4.0
    );

    assert_eq!(
        value(&after, "billing_entitlement_cache_organizations", &[]),
        1.0
    );
    assert_eq!(
        value(&after, "billing_entitlement_cache_stale_seconds", &[]),
        0.0
    );
    assert!(value(&after, "billing_entitlement_cache_version_lag", &[]) >= 0.0);

    let customers = [("endpoint", "create_customer"), ("outcome", "ok")];
    assert_eq!(
        value(&after, "billing_stripe_requests_total", &customers),
        1.0
    );
    assert!(
        observations(
            &after,
            "billing_stripe_request_duration_seconds",
            &[("endpoint", "create_checkout_session")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "billing_inbox_events_applied_total",
            &[("outcome", "applied")]
        ) >= 1.0
    );
    assert!(observations(&after, "billing_inbox_apply_duration_seconds", &[]) >= 1.0);
    assert_eq!(value(&after, "billing_inbox_pending_events", &[]), 0.0);
    assert_eq!(value(&after, "billing_inbox_parked_events", &[]), 0.0);
    assert_eq!(
        value(&after, "billing_inbox_oldest_pending_age_seconds", &[]),
        0.0
    );

    assert_eq!(
        value(&after, "billing_usage_debits_total", &[]),
        1.0,
        "a replay is not a debit"
    );
    assert_eq!(
        value(
            &after,
            "billing_credit_holds_total",
            &[("event", "reserved")]
        ),
        1.0
    );
    assert!(observations(&after, "billing_usage_group_commit_reports", &[]) >= 2.0);

    let idle = value(&after, "billing_db_pool_connections", &[("state", "idle")]);
    let in_use = value(
        &after,
        "billing_db_pool_connections",
        &[("state", "in_use")],
    );
    assert!(
        idle + in_use >= 1.0 && idle + in_use <= 5.0,
        "{idle} + {in_use}"
    );

    // No sample anywhere is labelled with the organization.
    for sample in &after.samples {
        for label in sample.labels.values() {
            assert_ne!(label, &org, "{} is labelled with an org id", sample.metric);
        }
    }
    // Every family is documented.
    for family in [
        "billing_grpc_requests_total",
        "billing_grpc_request_duration_seconds",
        "billing_stripe_requests_total",
        "billing_inbox_pending_events",
        "billing_usage_debits_total",
    ] {
        assert!(after.docs.contains_key(family), "no HELP for {family}");
    }
}
