//! Overload: calls over their class's cap are answered RESOURCE_EXHAUSTED
//! at once, and slow billing calls never starve entitlement checks.

use std::time::Duration;

use billing_service::grpc::ConcurrencyLimits;
use billing_service::grpc::proto::{self, EntitlementReason};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::{As, TestOptions, request, spawn_app_with};
use crate::stripe_server::FakeStripe;

/// The gateway's check of alice's proxy access.
fn proxy_check(
    org: &str,
    min_version: Option<u64>,
) -> tonic::Request<proto::CheckEntitlementRequest> {
    request(
        As::Gateway,
        proto::CheckEntitlementRequest {
            org_id: org.to_owned(),
            user_id: "alice".into(),
            feature: "proxy".into(),
            min_version,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_billing_calls_over_the_cap_are_shed_and_checks_still_answer() {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions {
        limits: ConcurrencyLimits {
            entitlement: 64,
            other: 2,
            ..ConcurrencyLimits::default()
        },
        ..TestOptions::with_stripe(&stripe)
    })
    .await;
    let org = app.create_org("alice").await;
    // Stripe answers slowly: each portal session takes two seconds.
    stripe.set_delay(Duration::from_secs(2));

    let mut slow = tokio::task::JoinSet::new();
    for n in 0..6 {
        let mut billing = app.billing();
        let portal = request(
            As::User("alice"),
            proto::CreateBillingPortalSessionRequest {
                org_id: org.id.clone(),
                // Distinct requests, so none is an idempotent replay of another.
                return_url: format!("https://app.example.com/billing/{n}"),
                ..Default::default()
            },
        );
        slow.spawn(async move {
            let result = billing.create_billing_portal_session(portal).await;
            // A shed call says when to try again.
            result.map(drop).map_err(|status| {
                let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
                (status.code(), retry.is_some())
            })
        });
    }
    // While billing is saturated, the gateway's checks go through.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut entitlements = app.entitlements();
        let check = proxy_check(&org.id, None);
        checks.spawn(async move { entitlements.check_entitlement(check).await });
    }
    while let Some(check) = checks.join_next().await {
        let reply = check
            .expect("task")
            .expect("checks are not shed")
            .into_inner();
        assert_eq!(reply.reason(), EntitlementReason::TrialActive);
    }

    let (mut served, mut shed) = (0, 0);
    while let Some(outcome) = slow.join_next().await {
        match outcome.expect("task") {
            Ok(()) => served += 1,
            Err((Code::ResourceExhausted, true)) => shed += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((served, shed), (2, 4));
    let metrics = crate::metrics::scrape(&app).await;
    let counted = crate::metrics::value(&metrics, "billing_load_shed_total", &[("class", "other")]);
    assert_eq!(counted, 4.0);
    // The shed calls never reached Stripe: they were answered, not queued.
    assert_eq!(stripe.writes("POST /v1/billing_portal/sessions").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_serving_while_checks_are_shed() {
    let app = spawn_app_with(TestOptions {
        limits: ConcurrencyLimits {
            entitlement: 2,
            health: 8,
            other: 2,
        },
        ..TestOptions::default()
    })
    .await;
    let org = app.create_org("alice").await;
    // Checks asking for a version never committed wait out the replica's
    // min_version wait before answering, so they pile up on their cap.
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut entitlements = app.entitlements();
        let check = proxy_check(&org.id, Some(u64::MAX / 2));
        checks.spawn(async move { entitlements.check_entitlement(check).await });
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut health = HealthClient::new(app.channel.clone());
        probes.spawn(async move {
            health
                .check(HealthCheckRequest {
                    service: "billing.v1.EntitlementService".into(),
                })
                .await
        });
    }
    while let Some(probe) = probes.join_next().await {
        let reply = probe.expect("task").expect("probes are not shed");
        assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
    }
    let mut shed = 0;
    while let Some(check) = checks.join_next().await {
        if let Err(status) = check.expect("task")
            && status.code() == Code::ResourceExhausted
        {
            shed += 1;
        }
    }
    assert!(
        shed > 0,
        "the checks went over their cap of 2 and were shed"
    );
}
