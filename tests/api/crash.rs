//! A billing operation survives its process dying between the Stripe write
//! and the outcome: the real binary is killed (SIGKILL) while the test
//! Stripe server holds its answer, and another replica finishes the
//! operation once, replaying the write under the same idempotency key.
//! And no acknowledged usage debit is lost when the process dies mid-stream.

use std::time::Duration;

use billing_service::grpc::proto::billing_service_client::BillingServiceClient;
use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::{self, BillingCycle};

use crate::helpers::{As, TestApp, request, spawn_app_with_stripe};
use crate::service_process::ServiceProcess;

const OWNER: &str = "owner-1";

async fn operation_status(app: &TestApp, kind: &str) -> Option<String> {
    sqlx::query_scalar("select status from billing_operations where kind = $1")
        .bind(kind)
        .fetch_optional(&app.pool)
        .await
        .expect("operation")
}

#[tokio::test]
async fn an_operation_killed_after_its_stripe_write_is_finished_once_by_another_replica() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let sub = app
        .subscribe(&stripe, &org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await;
    let mut replica = ServiceProcess::new(&app, &stripe);
    let channel = replica.start().await;

    // The schedule is made at Stripe; the answer never reaches the process.
    let applied = stripe.hold_next_write("POST /v1/subscription_schedules");
    let org_id = org.clone();
    let call = tokio::spawn(async move {
        BillingServiceClient::new(channel)
            .change_billing_cycle(request(
                As::User(OWNER),
                proto::ChangeBillingCycleRequest {
                    org_id,
                    billing_cycle: BillingCycle::Yearly.into(),
                    ..Default::default()
                },
            ))
            .await
    });
    tokio::time::timeout(Duration::from_secs(20), applied.notified())
        .await
        .expect("the schedule write arrives");
    replica.kill();
    assert!(
        call.await.expect("the call task").is_err(),
        "the caller saw it die"
    );
    assert_eq!(
        operation_status(&app, "cycle_change").await.as_deref(),
        Some("running"),
        "the outcome was never recorded"
    );
    assert_eq!(stripe.schedules().len(), 1);

    // This replica's operations loop takes the lapsed claim over.
    for _ in 0..200 {
        if operation_status(&app, "cycle_change").await.as_deref() == Some("succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        operation_status(&app, "cycle_change").await.as_deref(),
        Some("succeeded")
    );
    // One Stripe object: the creation was replayed, not repeated.
    assert_eq!(stripe.schedules().len(), 1);
    assert_eq!(
        stripe.writes("POST /v1/subscription_schedules").len(),
        2,
        "create, then phases"
    );
    let schedule = stripe
        .schedule_of(&sub)
        .expect("the schedule drives the subscription");
    assert_eq!(
        schedule["phases"][1]["items"][0]["price"]["id"],
        "price_teams_yearly"
    );
    // One local change and one audit entry.
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    let pending = overview
        .pending_cycle_change
        .expect("the pending change is stored");
    assert_eq!(pending.billing_cycle(), BillingCycle::Yearly);
    let scheduled = app
        .audit_trail(&org)
        .await
        .into_iter()
        .filter(|action| action == "subscription.cycle_change_scheduled")
        .count();
    assert_eq!(scheduled, 1);
}

/// The gateway's usage report for one request.
fn debit(org: &str, key: &str, micros: i64) -> tonic::Request<proto::RecordUsageRequest> {
    request(
        As::Gateway,
        proto::RecordUsageRequest {
            org_id: org.to_owned(),
            user_id: OWNER.into(),
            amount_micros: micros,
            model: "gpt-4o".into(),
            idempotency_key: key.to_owned(),
            ..Default::default()
        },
    )
}

/// kill -9 in the middle of a stream of usage debits: every debit that was
/// acknowledged is in the ledger once, and replaying every key sent (the
/// gateway's retry) completes the rest without doubling any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_stream_of_debits_loses_no_acknowledged_debit_and_doubles_none() {
    const COST: i64 = 1_000;
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    app.grant(&org, 1_000_000_000, "grant").await;
    let mut replica = ServiceProcess::new(&app, &stripe);
    let channel = replica.start().await;

    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut streams = tokio::task::JoinSet::new();
    for stream in 0..16 {
        let mut gateway = EntitlementServiceClient::new(channel.clone());
        let org = org.clone();
        let acked = acked_tx.clone();
        streams.spawn(async move {
            let mut sent = Vec::new();
            for n in 0.. {
                let key = format!("s{stream}-{n}");
                sent.push(key.clone());
                match gateway.record_usage(debit(&org, &key, COST)).await {
                    Ok(_) => {
                        let _ = acked.send(key);
                    }
                    // The process died under it.
                    Err(_) => return sent,
                }
            }
            sent
        });
    }
    drop(acked_tx);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 300 {
        acknowledged.push(acked_rx.recv().await.expect("debits are acknowledged"));
    }
    replica.kill();
    let mut sent = Vec::new();
    while let Some(keys) = streams.join_next().await {
        sent.extend(keys.expect("stream"));
    }
    while let Ok(key) = acked_rx.try_recv() {
        acknowledged.push(key);
    }

    let posted: Vec<String> = sqlx::query_scalar(
        "select idempotency_key from credit_entries where org_id = $1::uuid and kind = 'usage'",
    )
    .bind(&org)
    .fetch_all(&app.pool)
    .await
    .expect("ledger");
    let posted: std::collections::HashSet<String> = posted.into_iter().collect();
    for key in &acknowledged {
        assert!(posted.contains(key), "acknowledged debit {key} was lost");
    }
    assert!(posted.len() <= sent.len());

    // The gateway retries everything it sent, on the surviving replica.
    for key in &sent {
        let retried = app
            .entitlements()
            .record_usage(debit(&org, key, COST))
            .await
            .expect("retry")
            .into_inner();
        assert_eq!(retried.replayed, posted.contains(key), "{key}");
    }
    let entries: i64 = sqlx::query_scalar(
        "select count(*) from credit_entries where org_id = $1::uuid and kind = 'usage'",
    )
    .bind(&org)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        entries,
        i64::try_from(sent.len()).expect("count"),
        "one entry per key"
    );
    let spent = COST * entries;
    assert_eq!(app.balance_micros(&org).await, 1_000_000_000 - spent);
}
