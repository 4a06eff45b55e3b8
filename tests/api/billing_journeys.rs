//! The seat-billing journeys, end to end: gRPC calls, the test Stripe
//! server through the real async-stripe client, and Stripe's events
//! delivered signed to the webhook listener and applied by the worker.

use billing_service::grpc::proto::{self, BillingCycle, Role};
use tonic::Code;

use crate::helpers::{
    As, TestApp, TestOptions, expect_code, request, spawn_app, spawn_app_with,
    spawn_app_with_stripe,
};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "owner-1";

fn dollars(money: &Option<proto::Money>) -> f64 {
    money.as_ref().expect("amount").amount_minor as f64 / 100.0
}

/// An organization in its trial (on the default Enterprise plan), with its owner.
async fn org(app: &TestApp) -> String {
    app.create_org(OWNER).await.id
}

/// Subscribes and checks the overview's figures.
async fn subscribed(
    app: &TestApp,
    stripe: &FakeStripe,
    plan: &str,
    cycle: BillingCycle,
    seat_count: i64,
) -> (String, String) {
    let org = org(app).await;
    let sub = app
        .subscribe(stripe, &org, OWNER, plan, cycle, seat_count)
        .await;
    (org, sub)
}

#[tokio::test]
async fn journey_teams_monthly_3_seats_pays_54_dollars_a_month() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(overview.has_subscription);
    assert_eq!(overview.status, "active");
    assert_eq!(overview.plan, "teams");
    assert_eq!(overview.billing_cycle(), BillingCycle::Monthly);
    assert_eq!(overview.paid_seats, 3);
    assert_eq!(dollars(&overview.next_payment), 54.00);
    assert!(overview.renews_at.is_some());
    assert!(overview.counts_for_access);
}

#[tokio::test]
async fn journey_teams_yearly_5_seats_pays_900_dollars_a_year() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Yearly, 5).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.billing_cycle(), BillingCycle::Yearly);
    assert_eq!(overview.paid_seats, 5);
    assert_eq!(dollars(&overview.next_payment), 900.00);
    assert_eq!(dollars(&overview.next_payment_monthly), 75.00);
}

#[tokio::test]
async fn journey_checkout_session_carries_seats_metadata_and_promotion_codes() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = org(&app).await;
    let url = app
        .checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await
        .expect("checkout");
    assert!(url.starts_with("https://checkout.stripe.test/"), "{url}");
    let session = &stripe.writes("POST /v1/checkout/sessions")[0];
    assert_eq!(session["mode"], "subscription");
    assert_eq!(session["allow_promotion_codes"], "true");
    assert_eq!(session["line_items"][0]["price"], "price_teams_monthly");
    assert_eq!(session["line_items"][0]["quantity"], "3");
    let metadata = &session["subscription_data"]["metadata"];
    assert_eq!(metadata["org_id"], org.as_str());
    assert_eq!(metadata["purchaser_user_id"], OWNER);
    assert_eq!(metadata["plan"], "teams");
    assert_eq!(metadata["type"], "seats");
}

#[tokio::test]
async fn journey_checkout_is_refused_while_a_subscription_runs_and_for_bad_input() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    let again = app
        .checkout(&org, OWNER, "teams", BillingCycle::Yearly, 3)
        .await;
    expect_code(again, Code::FailedPrecondition);

    let fresh = app.create_org("owner-2").await.id;
    for seats in [0, 101] {
        let status = expect_code(
            app.checkout(&fresh, "owner-2", "teams", BillingCycle::Monthly, seats)
                .await,
            Code::InvalidArgument,
        );
        assert!(status.message().contains("seats"), "{status:?}");
    }
    expect_code(
        app.checkout(&fresh, "owner-2", "nope", BillingCycle::Monthly, 1)
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        app.checkout(&fresh, "owner-2", "teams", BillingCycle::Unspecified, 1)
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn journey_two_concurrent_first_calls_make_one_stripe_customer() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = org(&app).await;
    let (a, b) = tokio::join!(
        app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3),
        app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3),
    );
    a.expect("first");
    b.expect("second");
    assert_eq!(stripe.customer_count(), 1);
    // The retried checkout got the same session: one idempotency key.
    let sessions = stripe.writes("POST /v1/checkout/sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
}

#[tokio::test]
async fn journey_teams_monthly_3_to_yearly_at_renewal_then_the_change_is_canceled() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    let overview = app
        .change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("cycle change");
    assert_eq!(overview.billing_cycle(), BillingCycle::Monthly);
    assert_eq!(dollars(&overview.next_payment), 54.00);
    let pending = overview.pending_cycle_change.expect("pending change");
    assert_eq!(pending.billing_cycle(), BillingCycle::Yearly);
    assert_eq!(pending.effective_at, overview.current_period_end);
    assert_eq!(dollars(&pending.next_payment), 540.00);
    assert_eq!(dollars(&pending.next_payment_monthly), 45.00);

    // The schedule: ours, current items to the period end, then only the
    // seat price swapped, billed from the phase start, never prorated.
    let schedule = stripe.schedule_of(&sub).expect("schedule");
    assert!(schedule["metadata"]["billing_service_cycle_change"].is_string());
    assert_eq!(schedule["end_behavior"], "release");
    let phases = schedule["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0]["items"][0]["price"]["id"], "price_teams_monthly");
    assert_eq!(phases[1]["items"][0]["price"]["id"], "price_teams_yearly");
    assert_eq!(phases[1]["items"][0]["quantity"], 3);
    assert_eq!(phases[1]["billing_cycle_anchor"], "phase_start");
    assert_eq!(phases[1]["proration_behavior"], "none");
    assert_eq!(phases[0]["end_date"], phases[1]["start_date"]);

    // The webhooks the change caused converge on the same state.
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(overview.pending_cycle_change.is_some());

    // Asking again (a retried RPC) changes nothing and makes no second schedule.
    let again = app
        .change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("retry");
    assert_eq!(again.pending_cycle_change, overview.pending_cycle_change);
    assert_eq!(stripe.schedules().len(), 1);

    let canceled = app
        .billing()
        .cancel_billing_cycle_change(request(
            As::User(OWNER),
            proto::CancelBillingCycleChangeRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("cancel change")
        .into_inner();
    assert!(canceled.pending_cycle_change.is_none());
    assert_eq!(canceled.billing_cycle(), BillingCycle::Monthly);
    assert!(stripe.schedule_of(&sub).is_none());
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(overview.pending_cycle_change.is_none());
    assert_eq!(dollars(&overview.next_payment), 54.00);
}

#[tokio::test]
async fn journey_teams_yearly_5_to_monthly_goes_from_75_to_90_a_month_at_renewal() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Yearly, 5).await;
    let overview = app
        .change_cycle(As::User(OWNER), &org, BillingCycle::Monthly)
        .await
        .expect("cycle change");
    assert_eq!(dollars(&overview.next_payment_monthly), 75.00);
    let pending = overview.pending_cycle_change.expect("pending");
    assert_eq!(pending.billing_cycle(), BillingCycle::Monthly);
    assert_eq!(dollars(&pending.next_payment), 90.00);
    assert_eq!(dollars(&pending.next_payment_monthly), 90.00);
    // Already on the cycle asked for.
    app.deliver_all(&stripe).await;

    // At the renewal the subscription moves to monthly.
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.billing_cycle(), BillingCycle::Monthly);
    assert_eq!(dollars(&overview.next_payment), 90.00);
    assert!(overview.pending_cycle_change.is_none());
}

#[tokio::test]
async fn journey_a_schedule_not_made_by_us_blocks_cycle_changes_and_is_never_released() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    stripe.attach_foreign_schedule(&sub);
    let status = expect_code(
        app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("schedule"), "{status:?}");
    expect_code(
        app.billing()
            .cancel_billing_cycle_change(request(
                As::User(OWNER),
                proto::CancelBillingCycleChangeRequest {
                    org_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        stripe.schedule_of(&sub).is_some(),
        "the foreign schedule stays"
    );
    assert!(stripe.writes("POST /v1/subscription_schedules/").is_empty());
}

#[tokio::test]
async fn journey_cancel_releases_a_schedule_stripe_will_not_cancel_around() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("cycle change");
    let canceled = app
        .billing()
        .cancel_subscription(request(
            As::User(OWNER),
            proto::CancelSubscriptionRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert!(canceled.cancel_at_period_end);
    assert!(canceled.pending_cycle_change.is_none());
    assert!(stripe.schedule_of(&sub).is_none());
    assert_eq!(stripe.subscription_json(&sub)["cancel_at_period_end"], true);
}

#[tokio::test]
async fn journey_a_cycle_change_failing_after_the_schedule_was_made_releases_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    stripe.refuse_schedule_updates(true);
    expect_code(
        app.change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
            .await,
        Code::FailedPrecondition,
    );
    let schedules = stripe.schedules();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0]["status"], "released");
    assert!(stripe.schedule_of(&sub).is_none());
    // Nothing blocks the next try.
    stripe.refuse_schedule_updates(false);
    let overview = app
        .change_cycle(As::User(OWNER), &org, BillingCycle::Yearly)
        .await
        .expect("second try");
    assert!(overview.pending_cycle_change.is_some());
}

#[tokio::test]
async fn journey_monthly_checkout_only_where_the_deployment_offers_it() {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions {
        monthly_signup: false,
        ..TestOptions::with_stripe(&stripe)
    })
    .await;
    let org = org(&app).await;
    let status = expect_code(
        app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3)
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().starts_with("billing_cycle"), "{status:?}");
    app.checkout(&org, OWNER, "teams", BillingCycle::Yearly, 3)
        .await
        .expect("yearly is offered");
}

#[tokio::test]
async fn journey_the_billing_portal_opens_for_the_orgs_one_customer() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = org(&app).await;
    let open = || {
        let mut billing = app.billing();
        let org = org.clone();
        async move {
            billing
                .create_billing_portal_session(request(
                    As::User(OWNER),
                    proto::CreateBillingPortalSessionRequest {
                        org_id: org,
                        return_url: "https://app.example.com/billing".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("portal")
                .into_inner()
                .url
        }
    };
    let url = open().await;
    assert!(url.starts_with("https://billing.stripe.test/"), "{url}");
    open().await;
    assert_eq!(stripe.customer_count(), 1);
    let customer = &stripe.writes("POST /v1/customers")[0];
    assert_eq!(customer["metadata"]["org_id"], org.as_str());
    let bad = app
        .billing()
        .create_billing_portal_session(request(
            As::User(OWNER),
            proto::CreateBillingPortalSessionRequest {
                org_id: org.clone(),
                return_url: "javascript:alert(1)".into(),
                ..Default::default()
            },
        ))
        .await;
    expect_code(bad, Code::InvalidArgument);
}

#[tokio::test]
async fn journey_concurrent_seat_changes_for_one_org_are_serialized() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    let (a, b) = tokio::join!(
        app.set_seats(As::User(OWNER), &org, 5, None),
        app.set_seats(As::User(OWNER), &org, 7, None)
    );
    a.expect("first");
    b.expect("second");
    // In either order seven seats are paid this period; Stripe bills what
    // the last change left.
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    let updates = stripe.writes("POST /v1/subscriptions/");
    let last = updates.last().expect("an update")["items"][0]["quantity"]
        .as_str()
        .expect("quantity")
        .parse::<i64>()
        .expect("number");
    assert_eq!(overview.paid_seats, 7);
    assert_eq!(
        overview.next_payment.expect("amount").amount_minor,
        last * 1800
    );
}

#[tokio::test]
async fn journey_changing_to_the_current_cycle_is_refused() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    let status = expect_code(
        app.change_cycle(As::User(OWNER), &org, BillingCycle::Monthly)
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("already"), "{status:?}");
}

#[tokio::test]
async fn journey_teams_monthly_cancel_then_resume_then_cancel_ends_and_resubscribe_keeps_terms() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 4).await;
    let cancel = || {
        let mut billing = app.billing();
        let org = org.clone();
        async move {
            billing
                .cancel_subscription(request(
                    As::User(OWNER),
                    proto::CancelSubscriptionRequest {
                        org_id: org,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let canceled = cancel().await.expect("cancel").into_inner();
    assert!(canceled.cancel_at_period_end);
    assert!(canceled.renews_at.is_none());
    assert!(canceled.counts_for_access);

    let resumed = app
        .billing()
        .resume_subscription(request(
            As::User(OWNER),
            proto::ResumeSubscriptionRequest {
                org_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    assert!(!resumed.cancel_at_period_end);
    assert!(resumed.renews_at.is_some());

    cancel().await.expect("cancel again");
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let ended = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(ended.status, "canceled");
    assert!(ended.ended_at.is_some());
    assert!(!ended.counts_for_access);

    let defaults = app.resubscribe_defaults(As::User(OWNER), &org).await;
    assert_eq!(defaults.billing_cycle(), BillingCycle::Monthly);
    assert_eq!(defaults.seats, 4);
    assert_eq!(defaults.plan, "teams");

    // With the subscription over, a new checkout is allowed.
    app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 4)
        .await
        .expect("resubscribe");
}

#[tokio::test]
async fn journey_resubscribe_defaults_without_history_are_one_seat_yearly() {
    let (app, _stripe) = spawn_app_with_stripe().await;
    let org = org(&app).await;
    let defaults = app.resubscribe_defaults(As::User(OWNER), &org).await;
    assert_eq!(
        (defaults.seats, defaults.billing_cycle()),
        (1, BillingCycle::Yearly)
    );
}

#[tokio::test]
async fn journey_teams_monthly_3_to_5_seats_is_immediate_and_5_to_3_waits_for_renewal() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    app.add_member(&org, "member-1", Role::Member).await;

    let grown = app
        .set_seats(As::User(OWNER), &org, 5, None)
        .await
        .expect("5 seats");
    let overview = grown.subscription.expect("overview");
    assert_eq!(overview.paid_seats, 5);
    assert_eq!(dollars(&overview.next_payment), 90.00);
    assert!(!grown.requires_authentication);
    let update = &stripe.writes("POST /v1/subscriptions/")[0];
    assert_eq!(update["proration_behavior"], "always_invoice");
    assert_eq!(update["payment_behavior"], "pending_if_incomplete");
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        5
    );

    // Two seats are in use (owner and member): 5 → 1 is refused, naming both.
    let status = expect_code(
        app.set_seats(As::User(OWNER), &org, 1, None).await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains('1') && status.message().contains('2'),
        "{status:?}"
    );

    // 5 → 3: five stay paid until the period ends, three from then.
    let shrunk = app
        .set_seats(As::User(OWNER), &org, 3, None)
        .await
        .expect("3 seats");
    let overview = shrunk.subscription.expect("overview");
    assert_eq!(overview.paid_seats, 5);
    let pending = overview.pending_seat_decrease.expect("pending decrease");
    assert_eq!((pending.from_seats, pending.to_seats), (5, 3));
    assert_eq!(pending.effective_at, overview.current_period_end);
    let update = stripe
        .writes("POST /v1/subscriptions/")
        .pop()
        .expect("update");
    assert_eq!(update["proration_behavior"], "none");
    // Stripe's events about the decrease change nothing before the renewal.
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.paid_seats, 5);
    assert!(overview.pending_seat_decrease.is_some());

    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.paid_seats, 3);
    assert!(overview.pending_seat_decrease.is_none());
    assert_eq!(dollars(&overview.next_payment), 54.00);
}

#[tokio::test]
async fn journey_a_seat_increase_needing_card_authentication_returns_where_to_finish_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, _) = subscribed(&app, &stripe, "teams", BillingCycle::Monthly, 3).await;
    stripe.set_card_needs_authentication(true);
    let reply = app
        .set_seats(As::User(OWNER), &org, 5, None)
        .await
        .expect("seat change");
    assert!(reply.requires_authentication);
    assert!(
        reply
            .authentication_url
            .starts_with("https://invoice.stripe.test/"),
        "{reply:?}"
    );
    // Nothing is added until the payment goes through.
    assert_eq!(reply.subscription.expect("overview").paid_seats, 3);
}

/// Enterprise commits to three hosted instances ($10 a month, $100 a year
/// each) at checkout, on top of its seats.
#[tokio::test]
async fn journey_enterprise_monthly_2_seats_and_3_units_pays_174_and_yearly_10_seats_7500() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (monthly, _) = subscribed(&app, &stripe, "enterprise", BillingCycle::Monthly, 2).await;
    let overview = app.subscription_of(&monthly, As::User(OWNER)).await;
    assert_eq!(overview.plan, "enterprise");
    assert_eq!(overview.paid_seats, 2, "units are not seats");
    assert_eq!(dollars(&overview.next_payment), 144.00 + 30.00);

    let (yearly, _) = subscribed(&app, &stripe, "enterprise", BillingCycle::Yearly, 10).await;
    let overview = app.subscription_of(&yearly, As::User(OWNER)).await;
    assert_eq!(overview.billing_cycle(), BillingCycle::Yearly);
    assert_eq!(dollars(&overview.next_payment), 7200.00 + 300.00);
}

#[tokio::test]
async fn journey_enterprise_cycle_changes_monthly_174_to_145_and_yearly_625_to_750() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (monthly, _) = subscribed(&app, &stripe, "enterprise", BillingCycle::Monthly, 2).await;
    let overview = app
        .change_cycle(As::User(OWNER), &monthly, BillingCycle::Yearly)
        .await
        .expect("to yearly");
    assert_eq!(dollars(&overview.next_payment_monthly), 174.00);
    let pending = overview.pending_cycle_change.expect("pending");
    // 2 seats at $720 and 3 units at $100 a year.
    assert_eq!(dollars(&pending.next_payment), 1740.00);
    assert_eq!(dollars(&pending.next_payment_monthly), 145.00);

    let (yearly, _) = subscribed(&app, &stripe, "enterprise", BillingCycle::Yearly, 10).await;
    let overview = app
        .change_cycle(As::User(OWNER), &yearly, BillingCycle::Monthly)
        .await
        .expect("to monthly");
    assert_eq!(dollars(&overview.next_payment_monthly), 625.00);
    let pending = overview.pending_cycle_change.expect("pending");
    assert_eq!(dollars(&pending.next_payment_monthly), 720.00 + 30.00);
}

#[tokio::test]
async fn journey_an_enterprise_trial_that_checks_out_teams_monthly_becomes_teams() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org_on(OWNER, Some("enterprise")).await.id;
    app.subscribe(&stripe, &org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.plan, "teams");
    let entitlements = app.entitlements_of(&org).await;
    assert_eq!(entitlements.plan, "teams");
}

#[tokio::test]
async fn journey_a_billing_manager_can_do_every_billing_action_and_a_member_none() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = org(&app).await;
    app.add_member(&org, "biller", Role::BillingManager).await;
    app.add_member(&org, "member-1", Role::Member).await;
    let biller = As::User("biller");
    let member = As::User("member-1");
    let billing = app.billing();

    let actions = |who: As<'static>| {
        let org = org.clone();
        let mut billing = billing.clone();
        async move {
            let mut codes = Vec::new();
            codes.push(
                billing
                    .create_checkout_session(request(
                        who,
                        proto::CreateCheckoutSessionRequest {
                            org_id: org.clone(),
                            plan: "teams".into(),
                            billing_cycle: BillingCycle::Monthly.into(),
                            seats: 2,
                            success_url: "https://app.example.com/ok".into(),
                            cancel_url: "https://app.example.com/no".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            );
            codes.push(
                billing
                    .create_billing_portal_session(request(
                        who,
                        proto::CreateBillingPortalSessionRequest {
                            org_id: org.clone(),
                            return_url: "https://app.example.com/billing".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            );
            codes.push(
                billing
                    .get_resubscribe_defaults(request(
                        who,
                        proto::GetResubscribeDefaultsRequest {
                            org_id: org.clone(),
                        },
                    ))
                    .await
                    .map(drop),
            );
            codes
        }
    };
    for result in actions(member).await {
        expect_code(result, Code::PermissionDenied);
    }
    for result in actions(biller).await {
        result.expect("billing manager may");
    }
    let sessions = stripe.writes("POST /v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0]["subscription_data"]["metadata"]["purchaser_user_id"],
        "biller"
    );
    // The owner subscribes (so the billing manager stays a billing
    // manager); then every change to the running subscription.
    let sub = app
        .subscribe(&stripe, &org, OWNER, "teams", BillingCycle::Monthly, 2)
        .await;

    let mut billing = app.billing();
    let org_id = || org.clone();
    for who in [member, biller] {
        let allowed = matches!(who, As::User("biller"));
        let results = vec![
            billing
                .update_seat_count(request(
                    who,
                    proto::UpdateSeatCountRequest {
                        org_id: org_id(),
                        seats: 3,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            billing
                .change_billing_cycle(request(
                    who,
                    proto::ChangeBillingCycleRequest {
                        org_id: org_id(),
                        billing_cycle: BillingCycle::Yearly.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            billing
                .cancel_billing_cycle_change(request(
                    who,
                    proto::CancelBillingCycleChangeRequest {
                        org_id: org_id(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            billing
                .cancel_subscription(request(
                    who,
                    proto::CancelSubscriptionRequest {
                        org_id: org_id(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            billing
                .resume_subscription(request(
                    who,
                    proto::ResumeSubscriptionRequest {
                        org_id: org_id(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
        ];
        for result in results {
            if allowed {
                result.expect("billing manager may");
            } else {
                expect_code(result, Code::PermissionDenied);
            }
        }
    }
    assert!(stripe.schedule_of(&sub).is_none());
}

#[tokio::test]
async fn journey_without_a_stripe_key_billing_changes_answer_stripe_is_not_configured() {
    let app = spawn_app().await;
    let org = app.create_org(OWNER).await.id;
    let status = expect_code(
        app.checkout(&org, OWNER, "teams", BillingCycle::Monthly, 3)
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(status.message(), "Stripe is not configured");
    // Everything else still works.
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert!(!overview.has_subscription);
}
