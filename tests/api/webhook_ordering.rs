//! Stripe's events arriving in any order, any number of times, converge on
//! Stripe's latest state; failing events are retried, parked and retried by
//! operators; each transition shows in the entitlements.

use billing_service::grpc::proto::{self, BillingCycle};
use serde_json::Value;
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe, trial_end_in_days};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "owner-1";

fn of_type<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == event_type).collect()
}

/// A Teams monthly subscription of 3 seats whose events the test holds.
async fn checked_out(app: &TestApp, stripe: &FakeStripe) -> (String, String, Vec<Value>) {
    let org = app.create_org(OWNER).await.id;
    let url = app
        .checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await
        .expect("checkout");
    let sub = stripe.complete_checkout(&url);
    (org, sub, stripe.take_events())
}

#[tokio::test]
async fn the_same_event_delivered_five_times_is_applied_once() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _, events) = checked_out(&app, &stripe).await;
    let created = of_type(&events, "customer.subscription.created")[0].clone();
    app.deliver_events(&vec![created.clone(); 5]).await;
    let id = created["id"].as_str().expect("id");
    assert_eq!(app.stored_events(id).await, 1);
    assert_eq!(app.event_state(id).await, "applied");
    let synced = app
        .audit_actions(&org)
        .await
        .into_iter()
        .filter(|a| a.action == "subscription.synced")
        .count();
    assert_eq!(synced, 1, "applied once");
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        3
    );
}

#[tokio::test]
async fn updated_before_created_converges_on_stripes_state() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub, mut events) = checked_out(&app, &stripe).await;
    // A seat change made in the dashboard, whose `updated` arrives first.
    stripe.add_item(&sub, "price_teams_free_seat", 2);
    events.extend(stripe.take_events());
    events.reverse();
    app.deliver_events(&events).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.status, "active");
    assert_eq!(overview.paid_seats, 5);
    assert_eq!(overview.next_payment.expect("amount").amount_minor, 5400);
}

#[tokio::test]
async fn an_old_updated_after_a_newer_one_does_not_roll_back() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub, events) = checked_out(&app, &stripe).await;
    app.deliver_events(&events).await;
    stripe.fail_renewal_payment(&sub);
    let past_due = stripe.take_events();
    stripe.end_period(&sub);
    let renewed = stripe.take_events();
    // The newer state first, then the older events.
    app.deliver_events(&renewed).await;
    app.deliver_events(&past_due).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(
        overview.status,
        stripe.subscription_json(&sub)["status"]
            .as_str()
            .expect("status")
    );
    assert_eq!(overview.status, "past_due");
    // And every event, shuffled and doubled, still lands on the same state.
    let mut all = [events, past_due, renewed].concat();
    all.extend(all.clone());
    all.reverse();
    app.deliver_events(&all).await;
    assert_eq!(app.subscription_of(&org, As::User(OWNER)).await, overview);
}

#[tokio::test]
async fn a_subscription_with_paid_free_and_add_on_items_reads_right_in_any_order() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub, events) = checked_out(&app, &stripe).await;
    app.deliver_events(&events).await;
    stripe.add_item(&sub, "price_addon_agent", 1);
    stripe.add_item(&sub, "price_teams_free_seat", 2);
    for reversed in [false, true] {
        if reversed {
            stripe.reverse_items(&sub);
        }
        let items: Vec<String> = stripe.subscription_json(&sub)["items"]["data"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["price"]["id"].as_str().expect("price").to_owned())
            .collect();
        app.deliver_all(&stripe).await;
        // Redeliver the latest `updated` so the reordered items are read.
        let update = serde_json::json!({
            "id": format!("evt_reread_{reversed}"),
            "object": "event",
            "type": "customer.subscription.updated",
            "created": chrono::Utc::now().timestamp(),
            "data": { "object": stripe.subscription_json(&sub) },
        });
        app.deliver_events(&[update]).await;
        let overview = app.subscription_of(&org, As::User(OWNER)).await;
        assert_eq!(overview.paid_seats, 5, "{items:?}");
        assert_eq!(overview.billing_cycle(), BillingCycle::Monthly, "{items:?}");
        assert_eq!(overview.plan, "teams");
        // 3 × $18 + one $5 add-on; free seats cost nothing.
        assert_eq!(
            overview.next_payment.expect("amount").amount_minor,
            5900,
            "{items:?}"
        );
    }
}

#[tokio::test]
async fn entitlements_follow_trial_paid_past_due_and_canceled() {
    use proto::{AccessState, EntitlementReason};
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let access = |e: &proto::GetEntitlementsResponse| e.access();
    assert_eq!(access(&app.entitlements_of(&org).await), AccessState::Trial);
    assert_eq!(
        app.check(&org, OWNER).await.reason(),
        EntitlementReason::TrialActive
    );

    let sub = app
        .subscribe(&stripe, &org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await;
    assert_eq!(
        access(&app.entitlements_of(&org).await),
        AccessState::Subscribed
    );
    assert_eq!(
        app.check(&org, OWNER).await.reason(),
        EntitlementReason::SubscriptionActive
    );

    // Past due still grants access while Stripe retries the card, even
    // with the trial long over.
    app.set_trial_end(&org, trial_end_in_days(-10)).await;
    stripe.fail_renewal_payment(&sub);
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.status,
        "past_due"
    );
    assert_eq!(
        access(&app.entitlements_of(&org).await),
        AccessState::Subscribed
    );
    assert!(app.check(&org, OWNER).await.allowed);

    stripe.delete_subscription(&sub);
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.status,
        "canceled"
    );
    assert_eq!(
        access(&app.entitlements_of(&org).await),
        AccessState::SubscriptionInactive
    );
    let check = app.check(&org, OWNER).await;
    assert!(!check.allowed, "{check:?}");
}

/// Issue 10, case 7: paying changes nobody's role. A billing manager who
/// buys a one-seat plan stays a billing manager, takes no seat, and the
/// organization is not over its seats.
#[tokio::test]
async fn a_billing_manager_who_pays_keeps_their_role_and_takes_no_seat() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    app.add_member(&org, "buyer", proto::Role::BillingManager)
        .await;
    let before = app.seat_usage(&org).await;
    app.subscribe(&stripe, &org, "buyer", "teams", BillingCycle::Monthly, 1)
        .await;
    let members = app.members_of(&org).await;
    let buyer = members
        .iter()
        .find(|m| m.user_id == "buyer")
        .expect("buyer");
    assert_eq!(buyer.role(), proto::Role::BillingManager);
    let usage = app.seat_usage(&org).await;
    assert_eq!(usage.used_seats, before.used_seats);
    assert_eq!((usage.used_seats, usage.paid_seats), (1, 1));
    assert_eq!(usage.gate(), proto::SeatGate::SeatsFull);
    assert!(
        app.check(&org, OWNER).await.allowed,
        "the owner keeps access"
    );
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.purchaser_user_id, "buyer");

    // A purchaser removed before the subscription arrived stays out.
    let other = app.create_org(OWNER).await.id;
    app.add_member(&other, "leaver", proto::Role::BillingManager)
        .await;
    let url = app
        .checkout(&other, "leaver", "teams", BillingCycle::Monthly, 1)
        .await
        .expect("checkout");
    app.remove_member(As::User(OWNER), &other, "leaver")
        .await
        .expect("removed");
    stripe.complete_checkout(&url);
    app.deliver_all(&stripe).await;
    let members = app.members_of(&other).await;
    assert!(members.iter().all(|m| m.user_id != "leaver"), "{members:?}");
}

#[tokio::test]
async fn a_failing_event_is_retried_then_parked_and_an_operator_can_retry_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub, events) = checked_out(&app, &stripe).await;
    stripe.set_unreadable(&sub, true);
    app.deliver_events(&events).await;
    let list = || {
        let mut billing = app.billing();
        async move {
            billing
                .list_parked_stripe_events(request(
                    As::Ops,
                    proto::ListParkedStripeEventsRequest { limit: 0 },
                ))
                .await
                .expect("parked")
                .into_inner()
                .events
        }
    };
    let parked = list().await;
    // The three events name the subscription; each failed every attempt.
    assert_eq!(parked.len(), 3, "{parked:?}");
    assert!(
        parked
            .iter()
            .all(|e| e.attempts == 3 && !e.last_error.is_empty())
    );
    assert!(
        !app.subscription_of(&org, As::User(OWNER))
            .await
            .has_subscription
    );

    // Members may not see or retry them.
    expect_code(
        app.billing()
            .list_parked_stripe_events(request(
                As::User(OWNER),
                proto::ListParkedStripeEventsRequest { limit: 0 },
            ))
            .await,
        Code::PermissionDenied,
    );

    stripe.set_unreadable(&sub, false);
    let first = parked[0].event_id.clone();
    app.billing()
        .retry_stripe_event(request(
            As::Ops,
            proto::RetryStripeEventRequest {
                event_id: first.clone(),
            },
        ))
        .await
        .expect("retry");
    app.wait_for_inbox().await;
    assert_eq!(app.event_state(&first).await, "applied");
    assert_eq!(list().await.len(), 2);
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        3
    );
    expect_code(
        app.billing()
            .retry_stripe_event(request(
                As::Ops,
                proto::RetryStripeEventRequest { event_id: first },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn an_event_type_we_do_not_act_on_is_recorded_as_no_effect() {
    let (app, _stripe) = spawn_app_with_stripe().await;
    let event = serde_json::json!({
        "id": "evt_unknown_type",
        "object": "event",
        "type": "charge.refunded",
        "created": chrono::Utc::now().timestamp(),
        "data": { "object": { "id": "ch_1", "object": "charge" } },
    });
    app.deliver_events(&[event]).await;
    assert_eq!(app.event_state("evt_unknown_type").await, "no_effect");
}

#[tokio::test]
async fn an_event_about_a_subscription_stripe_does_not_know_is_recorded_as_no_effect_with_the_reason()
 {
    let (app, _stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    let mut subscription = crate::stripe_fixtures::fixtures()["subscription"].clone();
    subscription["id"] = serde_json::json!("sub_gone_from_stripe");
    subscription["customer"] = serde_json::json!("cus_nobody");
    subscription["metadata"] = serde_json::json!({ "org_id": org.id });
    let event = serde_json::json!({
        "id": "evt_sub_gone",
        "object": "event",
        "type": "customer.subscription.updated",
        "created": chrono::Utc::now().timestamp(),
        "data": { "object": subscription },
    });
    app.deliver_events(&[event]).await;
    assert_eq!(app.event_state("evt_sub_gone").await, "no_effect");
    let (attempts, note): (i32, Option<String>) =
        sqlx::query_as("select attempts, note from stripe_events where id = 'evt_sub_gone'")
            .fetch_one(&app.pool)
            .await
            .expect("event");
    assert_eq!(attempts, 1, "finished at the first attempt, not retried");
    let note = note.expect("a reason");
    assert!(
        note.contains("Stripe does not know subscription sub_gone_from_stripe"),
        "{note}"
    );
}

#[tokio::test]
async fn a_rate_limited_read_of_the_subscription_is_retried_and_the_event_applied_once() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 2).await;
    stripe.fail_renewal_payment(&sub);
    stripe.rate_limit_next(2);
    app.deliver_all(&stripe).await;
    assert_eq!(stripe.rate_limited_answers(), 2, "two 429s, then an answer");
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.status,
        "past_due"
    );
    let attempts: Vec<i32> =
        sqlx::query_scalar("select attempts from stripe_events where state <> 'pending'")
            .fetch_all(&app.pool)
            .await
            .expect("events");
    assert!(attempts.iter().all(|&a| a == 1), "{attempts:?}");
}
