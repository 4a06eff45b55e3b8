//! Prepaid credits: grants, purchases through Stripe, usage debits, locking
//! and expiry.

use std::time::Duration;

use billing_service::grpc::proto::{self, BillingCycle, CreditEntryKind, EntitlementReason, Role};
use chrono::{TimeDelta, Utc};
use tonic::Code;

use crate::helpers::{
    As, expect_code, request, spawn_app, spawn_app_with_stripe, timestamp, trial_end_in_days,
};

const DOLLAR: i64 = 1_000_000;

#[tokio::test]
async fn an_operator_grant_adds_credit_once_per_key() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    assert_eq!(app.balance_micros(&org.id).await, 0);

    let first = app.grant(&org.id, 25 * DOLLAR, "welcome-credit").await;
    assert!(!first.replayed);
    let entry = first.entry.expect("entry");
    assert_eq!(entry.kind(), CreditEntryKind::Grant);
    assert_eq!(
        (entry.amount_micros, entry.balance_after_micros),
        (25 * DOLLAR, 25 * DOLLAR)
    );

    let retried = app.grant(&org.id, 25 * DOLLAR, "welcome-credit").await;
    assert!(retried.replayed);
    assert_eq!(retried.entry.expect("entry").id, entry.id);
    assert_eq!(app.balance_micros(&org.id).await, 25 * DOLLAR);

    let grant = |who, amount, key: &str| {
        let mut credits = app.credits();
        let request = request(
            who,
            proto::GrantCreditsRequest {
                org_id: org.id.clone(),
                amount_micros: amount,
                reason: "goodwill".into(),
                expires_at: None,
                idempotency_key: key.to_owned(),
            },
        );
        async move { credits.grant_credits(request).await }
    };
    let reused = expect_code(
        grant(As::Ops, 30 * DOLLAR, "welcome-credit").await,
        Code::AlreadyExists,
    );
    assert!(reused.message().contains("different amount"), "{reused:?}");
    expect_code(
        grant(As::User("alice"), DOLLAR, "owner-tries").await,
        Code::PermissionDenied,
    );
    expect_code(grant(As::Ops, 0, "zero").await, Code::InvalidArgument);
    expect_code(grant(As::Ops, DOLLAR, "").await, Code::InvalidArgument);

    // The ledger and the audit trail both show the grant once.
    let entries = app
        .credits()
        .list_credit_entries(request(
            As::User("alice"),
            proto::ListCreditEntriesRequest {
                org_id: org.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("ledger")
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 1);
    let granted = app
        .audit_actions(&org.id)
        .await
        .into_iter()
        .filter(|e| e.action == "credits.granted")
        .count();
    assert_eq!(granted, 1);
}

#[tokio::test]
async fn a_purchase_is_credited_when_the_webhook_reports_the_payment_and_replays_add_nothing() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    let url = app
        .start_credit_purchase(&org.id, "alice", 40 * DOLLAR)
        .await;
    let session = stripe
        .writes("POST /v1/checkout/sessions")
        .pop()
        .expect("session");
    assert_eq!(session["mode"], "payment");
    assert_eq!(
        session["line_items"][0]["price_data"]["unit_amount"],
        "4000"
    );
    assert_eq!(
        session["payment_intent_data"]["metadata"]["type"],
        "credit_purchase"
    );
    assert_eq!(session["metadata"]["org_id"], org.id.as_str());

    // Nothing is credited before Stripe reports the payment.
    assert_eq!(app.balance_micros(&org.id).await, 0);
    let payment = stripe.complete_payment_checkout(&url);
    let events = stripe.take_events();
    assert_eq!(events.len(), 2, "the session and the payment report it");
    app.deliver_events(&events).await;
    assert_eq!(app.balance_micros(&org.id).await, 40 * DOLLAR);

    // Redelivered, in the other order, with fresh event ids: still once.
    let mut replayed = events.clone();
    replayed.reverse();
    for (n, event) in replayed.iter_mut().enumerate() {
        event["id"] = format!("evt_replayed_{n}").into();
    }
    app.deliver_events(&replayed).await;
    app.deliver_events(&events).await;
    assert_eq!(app.balance_micros(&org.id).await, 40 * DOLLAR);

    let entries = app.ledger(&org.id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind(), CreditEntryKind::Purchase);
    assert_eq!(entries[0].stripe_payment_id, payment);
    assert_eq!(entries[0].user_id, "alice");
}

#[tokio::test]
async fn credit_purchases_are_for_billing_admins_and_in_whole_cents_within_bounds() {
    let (app, _stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    app.add_member(&org.id, "bob", Role::Member).await;
    let buy = |who, amount| {
        let mut credits = app.credits();
        let request = request(
            who,
            proto::CreateCreditPurchaseRequest {
                org_id: org.id.clone(),
                amount_micros: amount,
                success_url: "https://app.example.com/done".into(),
                cancel_url: "https://app.example.com/back".into(),
                ..Default::default()
            },
        );
        async move { credits.create_credit_purchase(request).await }
    };
    expect_code(
        buy(As::User("bob"), 40 * DOLLAR).await,
        Code::PermissionDenied,
    );
    for bad in [DOLLAR, 40 * DOLLAR + 1, 20_000 * DOLLAR, -DOLLAR] {
        expect_code(buy(As::User("alice"), bad).await, Code::InvalidArgument);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_usage_debits_sum_exactly() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.grant(&org.id, 100 * DOLLAR, "load").await;
    let client = app.entitlements();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..200 {
        let mut client = client.clone();
        // 1,234 micro-units each: fractions of a cent add up exactly.
        let usage = request(
            As::Gateway,
            proto::RecordUsageRequest {
                org_id: org.id.clone(),
                user_id: "alice".into(),
                amount_micros: 1_234,
                model: "gpt-4o".into(),
                idempotency_key: format!("req-{n}"),
                ..Default::default()
            },
        );
        calls.spawn(async move { client.record_usage(usage).await });
    }
    let mut balances = Vec::new();
    while let Some(done) = calls.join_next().await {
        let reply = done.expect("task").expect("usage recorded").into_inner();
        balances.push(reply.balance_after_micros);
    }
    balances.sort_unstable();
    balances.dedup();
    assert_eq!(balances.len(), 200, "each debit saw the one before it");
    assert_eq!(
        app.balance_micros(&org.id).await,
        100 * DOLLAR - 200 * 1_234
    );
    let ledger_sum: i64 = sqlx::query_scalar(
        "select sum(amount_micros)::bigint from credit_entries where org_id = $1::uuid",
    )
    .bind(&org.id)
    .fetch_one(&app.pool)
    .await
    .expect("sum");
    assert_eq!(ledger_sum, 100 * DOLLAR - 200 * 1_234);
}

#[tokio::test]
async fn a_replayed_usage_key_returns_the_first_debit_and_takes_nothing_more() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.grant(&org.id, 10 * DOLLAR, "start").await;
    let first = app
        .record_usage(&org.id, "alice", 300_000, "req-1")
        .await
        .expect("usage");
    assert!(!first.replayed);
    assert_eq!(first.balance_after_micros, 9_700_000);
    let again = app
        .record_usage(&org.id, "alice", 300_000, "req-1")
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(
        (again.entry_id, again.balance_after_micros),
        (first.entry_id, 9_700_000)
    );
    assert_eq!(app.balance_micros(&org.id).await, 9_700_000);
    expect_code(
        app.record_usage(&org.id, "alice", 500_000, "req-1").await,
        Code::AlreadyExists,
    );
    expect_code(
        app.record_usage(&org.id, "alice", 0, "req-2").await,
        Code::InvalidArgument,
    );
    expect_code(
        app.record_usage(&org.id, "alice", 1, "").await,
        Code::InvalidArgument,
    );
    // The BFF may not report usage.
    let status = app
        .record_usage_as(As::User("alice"), &org.id, "alice", 1, "bff")
        .await;
    expect_code(status, Code::PermissionDenied);
}

#[tokio::test]
async fn paid_models_need_a_positive_balance_and_an_overdraft_denies_the_next_request() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    let paid = app
        .check_model(&org.id, "alice", Some("gpt-4o"), None)
        .await;
    assert!(!paid.allowed);
    assert_eq!(paid.reason(), EntitlementReason::InsufficientCredits);
    let free = app
        .check_model(&org.id, "alice", Some("GPT-4o-mini"), None)
        .await;
    assert!(free.allowed, "free models need no credits");

    app.grant(&org.id, DOLLAR, "start").await;
    assert!(
        app.check_model(&org.id, "alice", Some("gpt-4o"), None)
            .await
            .allowed
    );
    // The last request cost more than was left: it is taken in full.
    let overdrawn = app
        .record_usage(&org.id, "alice", 1_500_000, "big")
        .await
        .expect("usage");
    assert_eq!(overdrawn.balance_after_micros, -500_000);
    let denied = app
        .check_model(&org.id, "alice", Some("gpt-4o"), None)
        .await;
    assert_eq!(denied.reason(), EntitlementReason::InsufficientCredits);
    // New credit repays the overdraft first.
    app.grant(&org.id, DOLLAR, "top-up").await;
    assert_eq!(app.balance_micros(&org.id).await, 500_000);
    assert!(
        app.check_model(&org.id, "alice", Some("gpt-4o"), None)
            .await
            .allowed
    );
}

#[tokio::test]
async fn credits_lock_after_the_trial_hard_expires_and_unlock_when_the_org_subscribes() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    app.grant(&org.id, 10 * DOLLAR, "start").await;
    app.set_trial_end(&org.id, trial_end_in_days(-10)).await;

    let balance = app.balance(&org.id, As::User("alice")).await;
    assert!(balance.locked);
    assert_eq!(balance.balance_micros, Some(10 * DOLLAR), "nothing is lost");
    let check = app
        .check_model(&org.id, "alice", Some("gpt-4o"), None)
        .await;
    assert!(check.credits_locked);
    assert_eq!(check.reason(), EntitlementReason::TrialExpired);
    let refused = expect_code(
        app.record_usage(&org.id, "alice", 1_000, "locked").await,
        Code::FailedPrecondition,
    );
    assert!(refused.message().contains("locked"), "{refused:?}");

    app.subscribe(&stripe, &org.id, "alice", "teams", BillingCycle::Monthly, 1)
        .await;
    let balance = app.balance(&org.id, As::User("alice")).await;
    assert!(!balance.locked);
    assert_eq!(balance.balance_micros, Some(10 * DOLLAR));
    assert!(
        app.check_model(&org.id, "alice", Some("gpt-4o"), None)
            .await
            .allowed
    );
    let debit = app
        .record_usage(&org.id, "alice", 1_000, "unlocked")
        .await
        .expect("usage after subscribing");
    assert_eq!(debit.balance_after_micros, 10 * DOLLAR - 1_000);
}

#[tokio::test]
async fn an_expiring_grant_stops_counting_at_its_expiry_and_the_sweep_writes_it_off() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.grant(&org.id, 5 * DOLLAR, "permanent").await;
    let expires_at = Utc::now() + TimeDelta::seconds(2);
    app.credits()
        .grant_credits(request(
            As::Ops,
            proto::GrantCreditsRequest {
                org_id: org.id.clone(),
                amount_micros: 3 * DOLLAR,
                reason: "promotion".into(),
                expires_at: Some(timestamp(expires_at)),
                idempotency_key: "promo".into(),
            },
        ))
        .await
        .expect("expiring grant");
    let past = app
        .credits()
        .grant_credits(request(
            As::Ops,
            proto::GrantCreditsRequest {
                org_id: org.id.clone(),
                amount_micros: DOLLAR,
                reason: "too late".into(),
                expires_at: Some(timestamp(Utc::now() - TimeDelta::seconds(1))),
                idempotency_key: "late".into(),
            },
        ))
        .await;
    expect_code(past, Code::InvalidArgument);

    // Usage draws on the expiring grant first.
    app.record_usage(&org.id, "alice", DOLLAR, "use-1")
        .await
        .expect("usage");
    let before = app.balance(&org.id, As::Ops).await;
    assert_eq!(before.balance_micros, Some(7 * DOLLAR));
    assert_eq!(before.next_expiry_micros, Some(2 * DOLLAR));
    // A member sees when, not how much.
    app.add_member(&org.id, "bob", Role::Member).await;
    let member_view = app.balance(&org.id, As::User("bob")).await;
    assert!(!member_view.amounts_visible);
    assert_eq!(member_view.balance_micros, None);
    assert_eq!(member_view.next_expiry_micros, None);
    assert!(member_view.next_expiry_at.is_some());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Read right away: the expired rest no longer counts, swept or not.
    assert_eq!(app.balance_micros(&org.id).await, 5 * DOLLAR);
    // The sweep writes it off in the ledger, once.
    let mut expiries = Vec::new();
    for _ in 0..100 {
        expiries = ledger_of_kind(&app, &org.id, CreditEntryKind::Expiry).await;
        if !expiries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(expiries.len(), 1);
    assert_eq!(expiries[0].amount_micros, -2 * DOLLAR);
    assert_eq!(expiries[0].balance_after_micros, 5 * DOLLAR);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ledger_of_kind(&app, &org.id, CreditEntryKind::Expiry)
            .await
            .len(),
        1
    );
    assert_eq!(app.balance_micros(&org.id).await, 5 * DOLLAR);
}

async fn ledger_of_kind(
    app: &crate::helpers::TestApp,
    org: &str,
    kind: CreditEntryKind,
) -> Vec<proto::CreditEntry> {
    app.ledger(org)
        .await
        .into_iter()
        .filter(|e| e.kind() == kind)
        .collect()
}

#[tokio::test]
async fn adjustments_correct_either_way_but_never_overdraw() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    app.grant(&org.id, 2 * DOLLAR, "start").await;
    let adjust = |amount, key: &str| {
        let mut credits = app.credits();
        let request = request(
            As::Ops,
            proto::AdjustCreditsRequest {
                org_id: org.id.clone(),
                amount_micros: amount,
                reason: "support ticket 42".into(),
                idempotency_key: key.to_owned(),
            },
        );
        async move { credits.adjust_credits(request).await }
    };
    adjust(-DOLLAR / 2, "fix-1").await.expect("take away");
    adjust(DOLLAR, "fix-2").await.expect("give back");
    expect_code(
        adjust(-10 * DOLLAR, "fix-3").await,
        Code::FailedPrecondition,
    );
    assert_eq!(app.balance_micros(&org.id).await, 2_500_000);
}
