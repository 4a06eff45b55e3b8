//! Billing changes as planned operations on Stripe's live state (issue 10):
//! each numbered case of the issue, through real gRPC calls, the real
//! async-stripe client and the test Stripe server.

use std::time::Duration;

use billing_service::grpc::proto::{self, BillingCycle, Role};
use tonic::Code;

use crate::helpers::{
    As, TestOptions, expect_code, request, spawn_app_with, spawn_app_with_stripe,
};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "owner-1";

/// A seat of Teams Monthly ($18) prorated over the 29 of 30 days left in a
/// period the test server starts a day before the subscription.
const ONE_SEAT_REST_OF_PERIOD: i64 = 1740;

/// A `customer.subscription.updated` event about `sub`, as Stripe sends it.
fn subscription_event(stripe: &FakeStripe, sub: &str) -> serde_json::Value {
    let mut event = serde_json::Value::Object(
        crate::stripe_fixtures::fixtures()["event"]
            .as_object()
            .expect("event")
            .clone(),
    );
    event["id"] = serde_json::json!(format!("evt_{}", uuid::Uuid::new_v4().simple()));
    event["type"] = serde_json::json!("customer.subscription.updated");
    event["created"] = serde_json::json!(chrono::Utc::now().timestamp());
    event["data"] = serde_json::json!({ "object": stripe.subscription_json(sub) });
    event
}

/// The amount of the subscription's newest invoice.
fn last_invoice(stripe: &FakeStripe, sub: &str) -> (i64, String) {
    stripe.invoices_of(sub).pop().expect("an invoice")
}

#[tokio::test]
async fn case_1_an_increase_after_a_pending_decrease_charges_only_the_seats_beyond_those_paid() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 5).await;
    let decreased = app
        .set_seats(As::User(OWNER), &org, 3, None)
        .await
        .expect("5 -> 3");
    assert_eq!(decreased.status(), proto::SeatChangeStatus::DecreasePending);
    app.deliver_all(&stripe).await;

    let increased = app
        .set_seats(As::User(OWNER), &org, 6, None)
        .await
        .expect("3 -> 6");
    assert_eq!(increased.status(), proto::SeatChangeStatus::Increased);
    // Five seats were paid for this period: one more is charged, not three.
    assert_eq!(
        last_invoice(&stripe, &sub),
        (ONE_SEAT_REST_OF_PERIOD, "paid".to_owned())
    );
    assert_eq!(stripe.item_quantity(&sub, "price_teams_monthly"), Some(6));
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.paid_seats, 6);
    assert!(overview.pending_seat_decrease.is_none());
}

#[tokio::test]
async fn case_2_an_increase_after_a_renewal_whose_webhooks_are_late_is_prorated_and_invoiced() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 5).await;
    app.set_seats(As::User(OWNER), &org, 3, None)
        .await
        .expect("5 -> 3");
    app.deliver_all(&stripe).await;
    // Stripe renews at 3 seats; its events are held back (delayed, parked).
    stripe.end_period(&sub);
    let late = stripe.take_events();
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        5
    );

    app.set_seats(As::User(OWNER), &org, 4, None)
        .await
        .expect("3 -> 4");
    let update = stripe
        .writes("POST /v1/subscriptions/")
        .pop()
        .expect("update");
    assert_eq!(update["proration_behavior"], "always_invoice");
    // The new period has just begun: one whole seat-month.
    assert_eq!(last_invoice(&stripe, &sub), (1800, "paid".to_owned()));
    app.deliver_events(&late).await;
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        4
    );
}

#[tokio::test]
async fn case_3_a_second_checkout_and_a_second_same_amount_purchase_both_succeed() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 2).await;
    let first_url = stripe.writes("POST /v1/checkout/sessions").len();
    app.billing()
        .cancel_subscription(request(
            As::User(OWNER),
            proto::CancelSubscriptionRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("cancel");
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    // Within the same hour, the same request again: a new, payable session.
    let again = app
        .checkout(&org, OWNER, "teams", BillingCycle::Monthly, 2)
        .await
        .expect("resubscribe");
    assert_eq!(
        stripe.writes("POST /v1/checkout/sessions").len(),
        first_url + 1
    );
    let resubscribed = stripe.try_complete_checkout(&again).expect("payable");
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(overview.counts_for_access);
    assert_ne!(resubscribed, sub);

    // The same credit amount twice: two sessions, both paid, both credited.
    let purchase = |key: &'static str| {
        let mut credits = app.credits();
        let org = org.clone();
        async move {
            credits
                .create_credit_purchase(request(
                    As::User(OWNER),
                    proto::CreateCreditPurchaseRequest {
                        org_id: org,
                        amount_micros: 20_000_000,
                        success_url: "https://app.example.com/ok".into(),
                        cancel_url: "https://app.example.com/no".into(),
                        idempotency_key: key.into(),
                    },
                ))
                .await
                .expect("purchase")
                .into_inner()
                .url
        }
    };
    let (one, two) = (purchase("").await, purchase("").await);
    assert_ne!(one, two);
    // A retry with a key gets its first session back.
    let keyed = purchase("buy-3").await;
    assert_eq!(purchase("buy-3").await, keyed);
    stripe.complete_payment_checkout(&one);
    stripe.complete_payment_checkout(&two);
    app.deliver_all(&stripe).await;
    assert_eq!(app.balance_micros(&org).await, 40_000_000);
}

#[tokio::test]
async fn one_checkout_session_is_open_at_a_time_and_a_different_request_expires_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let first = app
        .checkout(&org, OWNER, "teams", BillingCycle::Monthly, 2)
        .await
        .expect("first");
    // The same request again (a reload, a second tab): the same session.
    let again = app
        .checkout(&org, OWNER, "teams", BillingCycle::Monthly, 2)
        .await
        .expect("again");
    assert_eq!(again, first);
    assert_eq!(stripe.writes("POST /v1/checkout/sessions").len(), 1);
    // Another request: the open page can no longer be paid.
    let yearly = app
        .checkout(&org, OWNER, "teams", BillingCycle::Yearly, 2)
        .await
        .expect("yearly");
    assert_ne!(yearly, first);
    assert_eq!(stripe.session_status(&first), "expired");
    assert!(stripe.try_complete_checkout(&first).is_err());
    stripe
        .try_complete_checkout(&yearly)
        .expect("the new one is payable");
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.billing_cycle(), BillingCycle::Yearly);
    // With it live, another checkout is refused.
    expect_code(
        app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 2)
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn case_4_ten_concurrent_checkouts_leave_one_payable_session() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    app.add_member(&org, "biller", Role::BillingManager).await;
    let calls = (0..10).map(|n| {
        let who = if n % 2 == 0 { OWNER } else { "biller" };
        app.checkout(&org, who, "teams", BillingCycle::Monthly, 2)
    });
    let urls: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|result| match result {
            Ok(url) => Some(url),
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                None
            }
        })
        .collect();
    assert!(!urls.is_empty());
    let open: Vec<&String> = urls
        .iter()
        .filter(|url| stripe.session_status(url) == "open")
        .collect();
    let mut distinct = open.clone();
    distinct.dedup();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 1, "one open session: {urls:?}");
    let paid: Vec<String> = urls
        .iter()
        .filter_map(|url| stripe.try_complete_checkout(url).ok())
        .collect();
    assert_eq!(paid.len(), 1, "only one session could be paid");
    app.deliver_all(&stripe).await;
    let customer = app.customer_of(&org).await;
    assert_eq!(stripe.live_subscriptions_of(&customer).len(), 1);
}

#[tokio::test]
async fn case_4_a_second_live_subscription_is_canceled_at_once_and_its_payment_refunded() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, first) = app.subscribed_org(&stripe, OWNER, 3).await;
    let customer = app.customer_of(&org).await;
    // A race Stripe cannot prevent: another subscription goes live.
    let second = stripe.subscribe_directly(&customer, "price_teams_monthly", 3);
    app.deliver_all(&stripe).await;
    assert_eq!(
        stripe.live_subscriptions_of(&customer),
        std::slice::from_ref(&first)
    );
    let (payment, amount) = stripe.first_payment_of(&second).expect("paid");
    assert_eq!(stripe.refunds(), [(payment, amount)]);
    assert_eq!(stripe.subscription_json(&second)["status"], "canceled");
    let trail = app.audit_trail(&org).await;
    assert_eq!(
        trail
            .iter()
            .filter(|a| *a == "subscription.duplicate_canceled")
            .count(),
        1
    );
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(overview.counts_for_access);
    assert_eq!(overview.paid_seats, 3);
    // Its events, delivered again, refund nothing more.
    app.deliver_all(&stripe).await;
    assert_eq!(stripe.refunds().len(), 1);
}

#[tokio::test]
async fn case_5_seat_changes_made_while_a_cycle_change_waits_survive_the_renewal() {
    let (app, stripe) = spawn_app_with_stripe().await;
    // (seats bought, then set to)
    for (bought, to) in [(3, 6), (4, 2)] {
        let (org, sub) = app.subscribed_org(&stripe, OWNER, bought).await;
        app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
            .await
            .expect("to yearly at renewal");
        app.set_seats(As::User(OWNER), &org, to, None)
            .await
            .expect("seat change");
        let schedule = stripe.schedule_of(&sub).expect("the switch stays");
        assert_eq!(schedule["phases"][1]["items"][0]["quantity"], to);
        app.deliver_all(&stripe).await;
        stripe.end_period(&sub);
        app.deliver_all(&stripe).await;
        let overview = app.subscription_of(&org, As::User(OWNER)).await;
        assert_eq!(
            overview.billing_cycle(),
            BillingCycle::Yearly,
            "{bought} -> {to}"
        );
        assert_eq!(overview.paid_seats, to, "{bought} -> {to}");
        assert_eq!(
            stripe.item_quantity(&sub, "price_teams_yearly"),
            Some(to as u64)
        );
    }
}

#[tokio::test]
async fn case_5_an_increase_paid_after_authentication_is_carried_into_a_pending_switch() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("to yearly at renewal");
    stripe.set_card_needs_authentication(true);
    let waiting = app
        .set_seats(As::User(OWNER), &org, 5, None)
        .await
        .expect("5 seats");
    assert_eq!(
        waiting.status(),
        proto::SeatChangeStatus::AwaitingAuthentication
    );
    assert!(waiting.requires_authentication);
    // Nothing is paid yet, so the schedule still renews at three.
    let schedule = stripe.schedule_of(&sub).expect("schedule");
    assert_eq!(schedule["phases"][1]["items"][0]["quantity"], 3);
    // The customer authenticates; the sync's upkeep moves the switch along.
    stripe.set_card_needs_authentication(false);
    stripe.pay_open_invoice(&sub);
    app.deliver_all(&stripe).await;
    let schedule = stripe.schedule_of(&sub).expect("schedule");
    assert_eq!(schedule["phases"][0]["items"][0]["quantity"], 5);
    assert_eq!(schedule["phases"][1]["items"][0]["quantity"], 5);
    assert!(
        app.audit_trail(&org)
            .await
            .iter()
            .any(|a| a == "subscription.cycle_change_realigned")
    );
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(
        (overview.paid_seats, overview.billing_cycle()),
        (5, BillingCycle::Yearly)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_6_usage_debits_racing_credit_grants_never_deadlock() {
    let app = crate::helpers::spawn_app().await;
    let org = app.create_org(OWNER).await.id;
    app.grant(&org, 50_000_000, "seed").await;
    let debits = (0..120).map(|n| {
        let app = &app;
        let org = org.clone();
        async move {
            app.record_usage(&org, OWNER, 10_000, &format!("use-{n}"))
                .await
                .map(drop)
        }
    });
    let grants = (0..30).map(|n| {
        let mut credits = app.credits();
        let org = org.clone();
        async move {
            credits
                .grant_credits(request(
                    As::Ops,
                    proto::GrantCreditsRequest {
                        org_id: org,
                        amount_micros: 1_000_000,
                        reason: "race".into(),
                        expires_at: None,
                        idempotency_key: format!("grant-{n}"),
                    },
                ))
                .await
                .map(drop)
        }
    });
    let (debits, grants) = tokio::join!(
        futures_util::future::join_all(debits),
        futures_util::future::join_all(grants)
    );
    let failures: Vec<_> = debits
        .into_iter()
        .chain(grants)
        .filter_map(Result::err)
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        app.balance_micros(&org).await,
        50_000_000 + 30 * 1_000_000 - 120 * 10_000
    );
}

#[tokio::test]
async fn case_8_while_paid_for_3_seats_in_the_trial_a_4th_invitation_is_refused() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = app.subscribed_org(&stripe, OWNER, 3).await;
    app.add_member(&org, "bob", Role::Member).await;
    app.invite(As::User(OWNER), &org, "carol@example.com", Role::Member)
        .await
        .expect("the third seat");
    let refused = expect_code(
        app.invite(As::User(OWNER), &org, "dave@example.com", Role::Member)
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains('4') && refused.message().contains('3'),
        "{refused:?}"
    );
    let usage = app.seat_usage(&org).await;
    assert_eq!((usage.used_seats, usage.paid_seats), (3, 3));
    assert_eq!(usage.gate(), proto::SeatGate::SeatsFull);
    for user in [OWNER, "bob"] {
        assert!(app.check(&org, user).await.allowed, "{user} keeps access");
    }
}

#[tokio::test]
async fn case_9_a_slow_stripe_with_two_connections_starves_nothing() {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions {
        database_max_connections: 2,
        operation_lease: Duration::from_secs(60),
        ..TestOptions::with_stripe(&stripe)
    })
    .await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    stripe.set_delay(Duration::from_secs(2));
    let changes = (0..20).map(|n| app.set_seats(As::User(OWNER), &org, 4 + n % 3, None));
    let reads = async {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            app.org_admin()
                .get_organization(request(
                    As::User(OWNER),
                    proto::GetOrganizationRequest {
                        org_id: org.clone(),
                    },
                ))
                .await
                .expect("GetOrganization answers");
            app.entitlements_of(&org).await;
            let event = subscription_event(&stripe, &sub);
            assert_eq!(app.deliver(&event.to_string()).await, 200, "ingress stores");
        }
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(changes), reads);
    for result in &results {
        if let Err(status) = result {
            assert!(
                matches!(status.code(), Code::Aborted | Code::Unavailable),
                "{status:?}"
            );
        }
    }
    assert!(
        results.iter().any(Result::is_ok),
        "at least one change went through"
    );
    stripe.set_delay(Duration::ZERO);
    app.wait_for_inbox().await;
}

#[tokio::test]
async fn case_10_a_declined_card_adds_no_seat_and_says_the_payment_failed() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    stripe.set_card_declines(true);
    let declined = expect_code(
        app.set_seats(As::User(OWNER), &org, 5, None).await,
        Code::FailedPrecondition,
    );
    assert!(declined.message().contains("declined"), "{declined:?}");
    // Nothing applied: Stripe keeps three, the invoice is void, our copy too.
    assert_eq!(stripe.item_quantity(&sub, "price_teams_monthly"), Some(3));
    assert_eq!(last_invoice(&stripe, &sub).1, "void");
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        3
    );
    let trail = app.audit_trail(&org).await;
    let requested = trail
        .iter()
        .position(|a| a == "subscription.seat_increase_requested")
        .expect("the increase awaiting payment");
    let failed = trail
        .iter()
        .position(|a| a == "subscription.seat_increase_payment_failed")
        .expect("its outcome");
    assert!(requested < failed);
    assert!(!trail.iter().any(|a| a == "subscription.seats_changed"));
    // A card that works afterwards: the same change goes through.
    stripe.set_card_declines(false);
    let paid = app
        .set_seats(As::User(OWNER), &org, 5, None)
        .await
        .expect("paid");
    assert_eq!(paid.status(), proto::SeatChangeStatus::Increased);
}

#[tokio::test]
async fn case_10_a_canceled_subscription_ending_a_moment_ahead_counts_as_ended_for_resubscribing() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 4).await;
    stripe.delete_subscription(&sub);
    app.deliver_all(&stripe).await;
    // Stripe's test clock put `ended_at` ahead of ours.
    sqlx::query("update subscriptions set ended_at = now() + interval '1 hour' where stripe_subscription_id = $1")
        .bind(&sub)
        .execute(&app.pool)
        .await
        .expect("move ended_at");
    let defaults = app.resubscribe_defaults(As::User(OWNER), &org).await;
    assert_eq!(
        (defaults.seats, defaults.billing_cycle()),
        (4, BillingCycle::Monthly)
    );
}

#[tokio::test]
async fn a_retried_change_with_its_key_answers_once_and_a_reused_key_for_another_is_refused() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = app.subscribed_org(&stripe, OWNER, 3).await;
    let first = app
        .set_seats(As::User(OWNER), &org, 5, Some("seats-1"))
        .await
        .expect("first");
    let writes = stripe.writes("POST /v1/subscriptions/").len();
    let again = app
        .set_seats(As::User(OWNER), &org, 5, Some("seats-1"))
        .await
        .expect("retry");
    assert_eq!(again.status(), first.status());
    assert_eq!(stripe.writes("POST /v1/subscriptions/").len(), writes);
    expect_code(
        app.set_seats(As::User(OWNER), &org, 7, Some("seats-1"))
            .await,
        Code::AlreadyExists,
    );
}
