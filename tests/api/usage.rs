//! Usage reports in group commits, `RecordUsageBatch`, and credit holds
//! (reserve with `CheckEntitlement`, settle with `RecordUsage`).

use std::time::Duration;

use billing_service::grpc::STATE_VERSION_HEADER;
use billing_service::grpc::proto::{self, EntitlementReason, record_usage_result};
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app};

const DOLLAR: i64 = 1_000_000;
const PAID_MODEL: &str = "gpt-4o";

fn report(org: &str, key: &str, micros: i64) -> proto::RecordUsageRequest {
    proto::RecordUsageRequest {
        org_id: org.to_owned(),
        user_id: "alice".into(),
        amount_micros: micros,
        model: PAID_MODEL.into(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    }
}

/// A paid-model check that reserves `micros` under `key`.
fn reserving(org: &str, key: &str, micros: i64) -> proto::CheckEntitlementRequest {
    proto::CheckEntitlementRequest {
        org_id: org.to_owned(),
        user_id: "alice".into(),
        feature: "proxy".into(),
        model: Some(PAID_MODEL.into()),
        reserve_micros: Some(micros),
        reservation_key: key.to_owned(),
        ..Default::default()
    }
}

impl TestApp {
    async fn batch(
        &self,
        reports: Vec<proto::RecordUsageRequest>,
    ) -> Vec<record_usage_result::Result> {
        self.entitlements()
            .record_usage_batch(request(
                As::Gateway,
                proto::RecordUsageBatchRequest { reports },
            ))
            .await
            .expect("batch")
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.result.expect("a result"))
            .collect()
    }

    async fn reserve(&self, org: &str, key: &str, micros: i64) -> proto::CheckEntitlementResponse {
        self.entitlements()
            .check_entitlement(request(As::Gateway, reserving(org, key, micros)))
            .await
            .expect("check")
            .into_inner()
    }

    async fn settle(
        &self,
        org: &str,
        hold: &str,
        key: &str,
        micros: i64,
    ) -> Result<proto::RecordUsageResponse, tonic::Status> {
        self.entitlements()
            .record_usage(request(
                As::Gateway,
                proto::RecordUsageRequest {
                    hold_id: hold.to_owned(),
                    ..report(org, key, micros)
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn recorded(result: &record_usage_result::Result) -> &proto::RecordUsageResponse {
    match result {
        record_usage_result::Result::Recorded(done) => done,
        record_usage_result::Result::Error(error) => panic!("refused: {error:?}"),
    }
}

fn refused(result: &record_usage_result::Result) -> Code {
    match result {
        record_usage_result::Result::Error(error) => Code::from(error.code),
        record_usage_result::Result::Recorded(done) => panic!("recorded: {done:?}"),
    }
}

#[tokio::test]
async fn a_batch_with_replays_and_new_keys_mixed_gives_exact_balances() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    let other = app.create_org("bob").await.id;
    app.grant(&org, 10 * DOLLAR, "grant").await;
    app.record_usage(&org, "alice", 1_000, "k1")
        .await
        .expect("k1");

    let results = app
        .batch(vec![
            report(&org, "k1", 1_000),    // a replay of a single call
            report(&org, "k2", 2_500),    // new
            report(&org, "k2", 2_500),    // the same key again within the batch
            report(&org, "k3", 3_333),    // new
            report(&org, "k1", 9_999),    // k1 for a different amount
            report(&other, "k2", 700),    // the same key in another organization
            report(&org, "bad", 0),       // invalid on its own
            report("not-a-uuid", "x", 5), // invalid on its own
        ])
        .await;
    assert_eq!(results.len(), 8);
    assert!(recorded(&results[0]).replayed);
    let k2 = recorded(&results[1]);
    assert!(!k2.replayed);
    assert_eq!(k2.balance_after_micros, 10 * DOLLAR - 1_000 - 2_500);
    assert!(recorded(&results[2]).replayed);
    assert_eq!(recorded(&results[2]).entry_id, k2.entry_id);
    assert_eq!(
        recorded(&results[3]).balance_after_micros,
        10 * DOLLAR - 1_000 - 2_500 - 3_333
    );
    assert_eq!(refused(&results[4]), Code::AlreadyExists);
    assert_eq!(recorded(&results[5]).balance_after_micros, -700);
    assert_eq!(refused(&results[6]), Code::InvalidArgument);
    assert_eq!(refused(&results[7]), Code::InvalidArgument);

    // The same batch again posts nothing new.
    let again = app
        .batch(vec![report(&org, "k2", 2_500), report(&org, "k3", 3_333)])
        .await;
    assert!(again.iter().all(|r| recorded(r).replayed));
    assert_eq!(app.balance_micros(&org).await, 10 * DOLLAR - 6_833);
    assert_eq!(app.balance_micros(&other).await, -700);
    let usage: Vec<_> = app
        .ledger(&org)
        .await
        .into_iter()
        .filter(|e| e.kind() == proto::CreditEntryKind::Usage)
        .collect();
    assert_eq!(usage.len(), 3, "one entry per key");

    // Empty and oversized batches fail as a whole.
    let mut entitlements = app.entitlements();
    let empty = entitlements
        .record_usage_batch(request(
            As::Gateway,
            proto::RecordUsageBatchRequest { reports: vec![] },
        ))
        .await;
    expect_code(empty, Code::InvalidArgument);
    let reports = (0..1_001)
        .map(|n| report(&org, &format!("big-{n}"), 1))
        .collect();
    let oversized = entitlements
        .record_usage_batch(request(
            As::Gateway,
            proto::RecordUsageBatchRequest { reports },
        ))
        .await;
    expect_code(oversized, Code::InvalidArgument);
    // The BFF may not report usage.
    let bff = entitlements
        .record_usage_batch(request(
            As::User("alice"),
            proto::RecordUsageBatchRequest {
                reports: vec![report(&org, "bff", 1)],
            },
        ))
        .await;
    expect_code(bff, Code::PermissionDenied);
}

#[tokio::test]
async fn a_full_batch_of_a_thousand_posts_each_report_once() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.grant(&org, 10 * DOLLAR, "grant").await;
    let reports = (0..1_000)
        .map(|n| report(&org, &format!("r-{n}"), 1_001))
        .collect();
    let results = app.batch(reports).await;
    assert!(results.iter().all(|r| !recorded(r).replayed));
    assert_eq!(app.balance_micros(&org).await, 10 * DOLLAR - 1_000 * 1_001);
}

#[tokio::test]
async fn a_hold_is_settled_once_for_the_actual_cost_and_the_rest_released() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.grant(&org, 10_000, "grant").await;

    let check = app.reserve(&org, "req-1", 8_000).await;
    assert!(check.allowed);
    assert!(!check.hold_id.is_empty());
    let balance = app.balance(&org, As::Ops).await;
    assert_eq!(
        (balance.balance_micros, balance.held_micros),
        (Some(10_000), Some(8_000))
    );
    assert_eq!(balance.active_holds, 1);
    // A retry of the same reservation is the same hold.
    assert_eq!(
        app.reserve(&org, "req-1", 8_000).await.hold_id,
        check.hold_id
    );
    // What is held may not be reserved again.
    let short = app.reserve(&org, "req-2", 3_000).await;
    assert_eq!(
        (short.allowed, short.reason()),
        (false, EntitlementReason::InsufficientCredits)
    );
    assert!(short.hold_id.is_empty());

    // The actual cost is debited; the rest is free again.
    let settled = app
        .settle(&org, &check.hold_id, "use-1", 5_000)
        .await
        .expect("settle");
    assert_eq!(settled.balance_after_micros, 5_000);
    assert!(
        app.settle(&org, &check.hold_id, "use-1", 5_000)
            .await
            .expect("replay")
            .replayed
    );
    let twice = app.settle(&org, &check.hold_id, "use-other", 5_000).await;
    expect_code(twice, Code::FailedPrecondition);
    let balance = app.balance(&org, As::Ops).await;
    assert_eq!(
        (balance.balance_micros, balance.held_micros),
        (Some(5_000), Some(0))
    );
    let ledger = app.ledger(&org).await;
    assert_eq!(ledger[0].hold_id, check.hold_id, "the debit names its hold");

    // A report of zero releases a hold without a debit.
    let second = app.reserve(&org, "req-3", 4_000).await;
    assert!(second.allowed);
    let released = app
        .settle(&org, &second.hold_id, "use-3", 0)
        .await
        .expect("release");
    assert!(released.entry_id.is_empty());
    assert_eq!(app.balance(&org, As::Ops).await.held_micros, Some(0));

    // Without a hold a zero report is invalid; an unknown hold is not found.
    expect_code(
        app.record_usage(&org, "alice", 0, "zero").await,
        Code::InvalidArgument,
    );
    let unknown = app
        .settle(&org, "00000000-0000-7000-8000-000000000000", "use-4", 1)
        .await;
    expect_code(unknown, Code::NotFound);
    // A free model takes no hold.
    let mut free = reserving(&org, "free-1", 1_000);
    free.model = Some("gpt-4o-mini".into());
    let free = app
        .entitlements()
        .check_entitlement(request(As::Gateway, free))
        .await
        .expect("check")
        .into_inner();
    assert!(free.allowed && free.hold_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_reserve_settle_pairs_never_overdraw() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    // Room for 25 requests of 1,000 at a time.
    app.grant(&org, 25_000, "grant").await;
    let mut pairs = tokio::task::JoinSet::new();
    for n in 0..200 {
        let mut entitlements = app.entitlements();
        let org = org.clone();
        pairs.spawn(async move {
            let check = entitlements
                .check_entitlement(request(
                    As::Gateway,
                    reserving(&org, &format!("req-{n}"), 1_000),
                ))
                .await
                .expect("check")
                .into_inner();
            if !check.allowed {
                assert_eq!(check.reason(), EntitlementReason::InsufficientCredits);
                return 0;
            }
            // The request costs no more than it reserved.
            let cost = 400 + (n % 7) * 100;
            entitlements
                .record_usage(request(
                    As::Gateway,
                    proto::RecordUsageRequest {
                        hold_id: check.hold_id,
                        ..report(&org, &format!("use-{n}"), cost)
                    },
                ))
                .await
                .expect("settle");
            cost
        });
    }
    let mut spent = 0;
    let mut served = 0;
    while let Some(cost) = pairs.join_next().await {
        let cost = cost.expect("pair");
        spent += cost;
        served += i64::from(cost > 0);
    }
    let balance = app.balance(&org, As::Ops).await;
    assert_eq!(balance.balance_micros, Some(25_000 - spent));
    assert!(spent <= 25_000, "never overdrawn: spent {spent}");
    assert!(served >= 25, "at least the first 25 were served ({served})");
    assert_eq!(balance.held_micros, Some(0));
}

#[tokio::test]
async fn an_expired_hold_is_released_and_still_settles_its_usage() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    app.grant(&org, 10_000, "grant").await;
    let mut short = reserving(&org, "req-1", 10_000);
    short.reservation_ttl_seconds = Some(1);
    let check = app
        .entitlements()
        .check_entitlement(request(As::Gateway, short))
        .await
        .expect("check")
        .into_inner();
    assert!(check.allowed);
    assert!(
        !app.reserve(&org, "req-2", 1).await.allowed,
        "all of it is held"
    );

    // The background loop releases it after its expiry.
    let mut released = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status: String =
            sqlx::query_scalar("select status from credit_holds where idempotency_key = 'req-1'")
                .fetch_one(&app.pool)
                .await
                .expect("hold");
        if status == "expired" {
            released = true;
            break;
        }
    }
    assert!(released, "the expired hold was released");
    let balance = app.balance(&org, As::Ops).await;
    assert_eq!((balance.held_micros, balance.active_holds), (Some(0), 0));
    assert!(app.reserve(&org, "req-3", 10_000).await.allowed);
    // The request it covered was served: its usage is still debited.
    let late = app
        .settle(&org, &check.hold_id, "use-1", 2_000)
        .await
        .expect("settle");
    assert_eq!(late.balance_after_micros, 8_000);
}

#[tokio::test]
async fn a_hold_on_replica_a_is_seen_by_replica_b_with_min_version() {
    let a = spawn_app().await;
    let b = a.spawn_replica().await;
    let org = a.create_org("alice").await.id;
    a.grant(&org, 5_000, "grant").await;
    b.wait_for_cache().await;
    let paid_check = |min_version: Option<u64>| proto::CheckEntitlementRequest {
        org_id: org.clone(),
        user_id: "alice".into(),
        feature: "proxy".into(),
        model: Some(PAID_MODEL.into()),
        min_version,
        ..Default::default()
    };
    let before = b
        .entitlements()
        .check_entitlement(request(As::Gateway, paid_check(None)))
        .await
        .expect("check")
        .into_inner();
    assert!(before.allowed);

    // A holds all of it; the hold's commit names its version.
    let held = a
        .entitlements()
        .check_entitlement(request(As::Gateway, reserving(&org, "req-1", 5_000)))
        .await
        .expect("reserve");
    let version: u64 = held
        .metadata()
        .get(STATE_VERSION_HEADER)
        .expect("the hold's version")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    assert!(held.into_inner().allowed);

    // B, asked at that version, already counts the hold.
    let after = b
        .entitlements()
        .check_entitlement(request(As::Gateway, paid_check(Some(version))))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        (after.allowed, after.reason()),
        (false, EntitlementReason::InsufficientCredits)
    );
    assert!(after.state_version >= version);
    assert!(!b.reserve(&org, "req-2", 1).await.allowed);
}
