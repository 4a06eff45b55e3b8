//! Lifecycle events of paid subscriptions, from Stripe's readings: each
//! change records exactly its events, and redelivered webhooks record
//! nothing more.

use billing_service::grpc::proto::{self, BillingCycle, Role};
use serde_json::Value;

use crate::event_helpers::committed_version;
use crate::helpers::{As, TestApp, request, spawn_app_with_stripe};

const OWNER: &str = "alice";
const DOLLAR: i64 = 1_000_000;

/// The organization's events from `since` on (an index into them), as
/// (type, data).
async fn events_since(app: &TestApp, org: &str, since: usize) -> Vec<(String, Value)> {
    app.events_of(org)
        .await
        .into_iter()
        .skip(since)
        .map(|e| (e.event_type, e.data))
        .collect()
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test]
async fn a_subscription_records_activated_updated_and_cancellation_events_once_each() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let sub = app
        .subscribe(&stripe, &org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await;
    let activated = events_since(&app, &org, 1).await;
    assert_eq!(types(&activated), ["subscription.activated"]);
    let state = &activated[0].1["subscription"];
    assert_eq!(state["stripeSubscriptionId"], sub);
    assert_eq!(state["status"], "active");
    assert_eq!(state["paidSeats"], "3");
    assert_eq!(state["billingCycle"], "BILLING_CYCLE_MONTHLY");
    assert_eq!(state["purchaserUserId"], OWNER);

    // Every event Stripe sent, delivered again under new ids: nothing new.
    let mut again = stripe.all_events();
    for (n, event) in again.iter_mut().enumerate() {
        event["id"] = format!("evt_again_{n}").into();
    }
    app.deliver_events(&again).await;
    assert_eq!(app.events_of(&org).await.len(), 2);

    // Declined at Stripe: nothing changed, nothing recorded.
    stripe.set_card_declines(true);
    let declined = app.set_seats(As::User(OWNER), &org, 6, None).await;
    assert!(declined.is_err(), "{declined:?}");
    stripe.set_card_declines(false);
    app.deliver_all(&stripe).await;
    assert_eq!(app.events_of(&org).await.len(), 2);

    let response = app
        .billing()
        .update_seat_count(request(
            As::User(OWNER),
            proto::UpdateSeatCountRequest {
                org_id: org.clone(),
                seats: 5,
                ..Default::default()
            },
        ))
        .await
        .expect("more seats");
    let version = committed_version(&response).expect("a committed version");
    app.deliver_all(&stripe).await;
    let stored = app.events_of(&org).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored[2].state_version, version,
        "recorded in the commit that stored the change"
    );
    let updated = events_since(&app, &org, 2).await;
    assert_eq!(types(&updated), ["subscription.updated"]);
    let data = &updated[0].1;
    assert_eq!(data["changedFields"], serde_json::json!(["paid_seats"]));
    assert_eq!(data["previous"]["paidSeats"], "3");
    assert_eq!(data["subscription"]["paidSeats"], "5");

    let cancel = |resume: bool| {
        let app = &app;
        let org = org.clone();
        async move {
            if resume {
                app.billing()
                    .resume_subscription(request(
                        As::User(OWNER),
                        proto::ResumeSubscriptionRequest {
                            org_id: org,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("resume");
            } else {
                app.billing()
                    .cancel_subscription(request(
                        As::User(OWNER),
                        proto::CancelSubscriptionRequest {
                            org_id: org,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("cancel");
            }
        }
    };
    cancel(false).await;
    app.deliver_all(&stripe).await;
    cancel(true).await;
    app.deliver_all(&stripe).await;
    cancel(false).await;
    app.deliver_all(&stripe).await;
    // The period ends while set to cancel: the subscription ends.
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let rest = events_since(&app, &org, 3).await;
    assert_eq!(
        types(&rest),
        [
            "subscription.cancellation_scheduled",
            "subscription.cancellation_withdrawn",
            "subscription.cancellation_scheduled",
            "subscription.ended",
        ]
    );
    assert_eq!(rest[3].1["subscription"]["status"], "canceled");
    assert!(rest[3].1["subscription"]["endedAt"].is_string());
}

#[tokio::test]
async fn a_failed_renewal_records_payment_failed_then_payment_recovered() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 2).await;
    let before = app.events_of(&org).await.len();
    stripe.fail_renewal_payment(&sub);
    app.deliver_all(&stripe).await;
    stripe.update_status(&sub, "active");
    app.deliver_all(&stripe).await;
    let events = events_since(&app, &org, before).await;
    assert_eq!(
        types(&events),
        [
            "subscription.updated",
            "payment.failed",
            "subscription.updated",
            "payment.recovered"
        ]
    );
    assert_eq!(events[0].1["changedFields"], serde_json::json!(["status"]));
    assert_eq!(events[0].1["previous"]["status"], "active");
    assert_eq!(events[0].1["subscription"]["status"], "past_due");
    assert_eq!(events[1].1["previousStatus"], "active");
    assert_eq!(events[3].1["previousStatus"], "past_due");
    assert_eq!(events[3].1["subscription"]["status"], "active");
}

#[tokio::test]
async fn a_billing_cycle_change_records_scheduled_canceled_and_applied() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    let before = app.events_of(&org).await.len();
    app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("cycle change");
    app.deliver_all(&stripe).await;
    app.billing()
        .cancel_billing_cycle_change(request(
            As::User(OWNER),
            proto::CancelBillingCycleChangeRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("cancel the change");
    app.deliver_all(&stripe).await;
    app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("cycle change again");
    app.deliver_all(&stripe).await;
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;

    let events = events_since(&app, &org, before).await;
    assert_eq!(
        types(&events),
        [
            "billing_cycle.change_scheduled",
            "billing_cycle.change_canceled",
            "billing_cycle.change_scheduled",
            "subscription.updated",
            "billing_cycle.change_applied",
        ]
    );
    let scheduled = &events[0].1;
    assert_eq!(scheduled["stripeSubscriptionId"], sub);
    assert_eq!(scheduled["fromBillingCycle"], "BILLING_CYCLE_MONTHLY");
    assert_eq!(scheduled["toBillingCycle"], "BILLING_CYCLE_YEARLY");
    // 3 Teams seats a year: $540.
    assert_eq!(scheduled["nextPayment"]["amountMinor"], "54000");
    assert_eq!(
        events[3].1["changedFields"],
        serde_json::json!(["billing_cycle"])
    );
    assert_eq!(events[4].1["toBillingCycle"], "BILLING_CYCLE_YEARLY");
}

#[tokio::test]
async fn seats_taken_away_at_stripe_record_seats_exceeded_then_within_limit() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 2).await;
    app.add_member(&org, "bob", Role::Member).await;
    let before = app.events_of(&org).await.len();

    // Someone lowers the quantity in Stripe's dashboard: the period was
    // paid for two, so one seat is scheduled to go at the renewal...
    stripe.set_quantity_without_event(&sub, "price_teams_monthly", 1);
    stripe.update_status(&sub, "active");
    app.deliver_all(&stripe).await;
    // ...where it goes, leaving two members on one paid seat.
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let exceeded = events_since(&app, &org, before).await;
    assert_eq!(
        types(&exceeded),
        [
            "subscription.updated",
            "subscription.updated",
            "seats.exceeded"
        ],
        "{exceeded:#?}"
    );
    assert_eq!(
        exceeded[0].1["changedFields"],
        serde_json::json!(["scheduled_seats"])
    );
    assert_eq!(exceeded[0].1["subscription"]["scheduledSeats"], "1");
    assert_eq!(exceeded[1].1["subscription"]["paidSeats"], "1");
    assert_eq!(exceeded[2].1["seatsUsed"], "2");
    assert_eq!(exceeded[2].1["seatsPaid"], "1");
    let check = app.check(&org, "bob").await;
    assert!(!check.allowed, "members are denied while over seats");

    // Still over: a second reading announces nothing.
    stripe.update_status(&sub, "active");
    app.deliver_all(&stripe).await;
    assert_eq!(app.events_of(&org).await.len(), before + 3);

    app.remove_member(As::User(OWNER), &org, "bob")
        .await
        .expect("remove bob");
    let within = events_since(&app, &org, before + 3).await;
    assert_eq!(types(&within), ["member.removed", "seats.within_limit"]);
    assert_eq!(within[1].1["seatsUsed"], "1");
    assert_eq!(within[1].1["seatsPaid"], "1");
}

#[tokio::test]
async fn a_paid_credit_purchase_records_credits_purchased_once() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let url = app.start_credit_purchase(&org, OWNER, 40 * DOLLAR).await;
    stripe.complete_payment_checkout(&url);
    let events = stripe.take_events();
    app.deliver_events(&events).await;
    // Redelivered under new ids: credited once, announced once.
    let mut again = events.clone();
    for (n, event) in again.iter_mut().enumerate() {
        event["id"] = format!("evt_again_{n}").into();
    }
    app.deliver_events(&again).await;
    let purchased: Vec<Value> = app
        .events_of(&org)
        .await
        .into_iter()
        .filter(|e| e.event_type == "credits.purchased")
        .map(|e| e.data)
        .collect();
    assert_eq!(purchased.len(), 1);
    assert_eq!(purchased[0]["amountMicros"], (40 * DOLLAR).to_string());
    assert_eq!(
        purchased[0]["balanceAfterMicros"],
        (40 * DOLLAR).to_string()
    );
}
