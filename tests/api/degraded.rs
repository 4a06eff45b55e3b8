//! Degraded mode: with the database unreachable, entitlement checks keep
//! answering from memory, marked stale; past the allowed staleness the
//! features configured to fail closed are denied; and everything recovers
//! by itself when the database returns.

use std::time::Duration;

use billing_service::domain::entitlement::StalePolicy;
use billing_service::grpc::proto::{self, EntitlementReason};
use chrono::TimeDelta;
use tonic::Code;

use crate::helpers::{As, TestApp, TestOptions, request, spawn_app, spawn_app_with};

async fn check(app: &TestApp, org: &str, feature: &str) -> proto::CheckEntitlementResponse {
    app.entitlements()
        .check_entitlement(request(
            As::Gateway,
            proto::CheckEntitlementRequest {
                org_id: org.to_owned(),
                user_id: "alice".into(),
                feature: feature.to_owned(),
                instance_id: (feature == "instance").then(|| "agent".to_owned()),
                ..Default::default()
            },
        ))
        .await
        .expect("answered from memory")
        .into_inner()
}

/// Polls until `done` holds for the proxy answer.
async fn until(app: &TestApp, org: &str, done: impl Fn(&proto::CheckEntitlementResponse) -> bool) {
    for _ in 0..400 {
        if done(&check(app, org, "proxy").await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replica did not reach the expected state");
}

#[tokio::test]
async fn checks_answer_from_memory_while_the_database_is_down_and_recover_when_it_returns() {
    let app = spawn_app_with(TestOptions {
        stale_policy: StalePolicy {
            max_staleness: TimeDelta::milliseconds(300),
            fail_closed_features: vec!["instance".into()],
        },
        ..TestOptions::default()
    })
    .await;
    let org = app.create_org("alice").await;
    app.create_instance(As::User("alice"), &org.id, "agent", None)
        .await
        .expect("instance");
    let fresh = check(&app, &org.id, "proxy").await;
    assert!(fresh.allowed && !fresh.stale);

    app.set_database_reachable(false).await;
    until(&app, &org.id, |answer| answer.stale).await;
    let proxy = check(&app, &org.id, "proxy").await;
    assert!(proxy.allowed, "from memory");
    assert_eq!(proxy.reason(), EntitlementReason::TrialActive);
    // Past the allowed staleness, the fail-closed feature is denied; the
    // others keep answering.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let instance = check(&app, &org.id, "instance").await;
    assert!(!instance.allowed && instance.stale);
    assert_eq!(instance.reason(), EntitlementReason::StateStale);
    assert!(check(&app, &org.id, "proxy").await.allowed);
    // What memory cannot answer is refused as unavailable, not guessed.
    let unknown = app
        .entitlements()
        .check_entitlement(request(
            As::Gateway,
            proto::CheckEntitlementRequest {
                org_id: uuid::Uuid::new_v4().to_string(),
                user_id: "alice".into(),
                feature: "proxy".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(unknown.expect_err("unknown org").code(), Code::Unavailable);

    app.set_database_reachable(true).await;
    until(&app, &org.id, |answer| !answer.stale).await;
    let back = check(&app, &org.id, "instance").await;
    assert!(back.allowed);
    assert_eq!(back.reason(), EntitlementReason::InstanceTrial);
}

/// A call that needs the database while it is unreachable is answered
/// UNAVAILABLE (retry), never INTERNAL.
#[tokio::test]
async fn a_call_that_needs_the_unreachable_database_is_answered_unavailable() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.set_database_reachable(false).await;
    let balance = app
        .credits()
        .get_credit_balance(request(
            As::User("alice"),
            proto::GetCreditBalanceRequest {
                org_id: org.id.clone(),
            },
        ))
        .await;
    let status = balance.expect_err("no database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("database"), "{status:?}");
    app.set_database_reachable(true).await;
}
