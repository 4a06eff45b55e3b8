//! Reconciliation: a subscription changed in Stripe with no event at all is
//! found, reported, and (unless it is a dry run) repaired; a credit purchase
//! credited from an event is read back from Stripe, and one Stripe does not
//! know is flagged.

use billing_service::grpc::proto;
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "rhea";
const SEAT_PRICE: &str = "price_teams_monthly";

async fn reconcile(
    app: &TestApp,
    who: As<'_>,
    org: &str,
    dry_run: bool,
) -> Result<proto::ReconcileStripeResponse, tonic::Status> {
    app.billing()
        .reconcile_stripe(request(
            who,
            proto::ReconcileStripeRequest {
                org_id: org.to_owned(),
                dry_run,
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_subscription_changed_in_stripe_without_an_event_is_repaired_and_a_dry_run_only_reports_it()
 {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    // Another organization, in sync, and a subscription of no organization
    // of ours in the same Stripe account.
    app.subscribed_org(&stripe, "otto", 2).await;
    stripe.subscribe_directly("cus_someone_else", SEAT_PRICE, 1);
    app.deliver_all(&stripe).await;
    stripe.set_quantity_without_event(&sub, SEAT_PRICE, 5);
    assert!(stripe.take_events().is_empty(), "no event was sent");
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        3
    );

    let dry = reconcile(&app, As::Ops, "", true).await.expect("dry run");
    assert_eq!(dry.checked, 2, "{dry:?}");
    assert_eq!(dry.in_sync, 1);
    assert_eq!(dry.drifted.len(), 1);
    assert_eq!(dry.drifted[0].subscription_id, sub);
    assert!(
        dry.drifted[0].fields.contains(&"paid_seats".to_owned()),
        "{dry:?}"
    );
    assert_eq!(dry.repaired, 0);
    assert_eq!(dry.unknown_at_stripe, 1);
    assert!(dry.missing_at_stripe.is_empty());
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        3,
        "a dry run changes nothing"
    );

    let repaired = reconcile(&app, As::Ops, "", false).await.expect("repair");
    assert_eq!(repaired.repaired, 1, "{repaired:?}");
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        5
    );

    // Now in sync, for the whole account and for the one organization.
    let again = reconcile(&app, As::Ops, "", false).await.expect("again");
    assert_eq!((again.checked, again.in_sync, again.repaired), (2, 2, 0));
    assert!(again.drifted.is_empty());
    let one = reconcile(&app, As::Ops, &org, true).await.expect("one org");
    assert_eq!((one.checked, one.in_sync), (1, 1), "{one:?}");

    expect_code(
        reconcile(&app, As::User(OWNER), "", true).await,
        Code::PermissionDenied,
    );
    expect_code(
        reconcile(&app, As::Ops, "not-an-org", true).await,
        Code::InvalidArgument,
    );
}

const DOLLAR: i64 = 1_000_000;

/// Buys `dollars` of credit through Checkout; returns the two events that
/// report the payment, not delivered yet.
async fn purchase_events(
    app: &TestApp,
    stripe: &FakeStripe,
    org: &str,
    dollars: i64,
) -> Vec<serde_json::Value> {
    let url = app
        .start_credit_purchase(org, OWNER, dollars * DOLLAR)
        .await;
    stripe.complete_payment_checkout(&url);
    stripe.take_events()
}

async fn flagged_entries(app: &TestApp, org: &str) -> usize {
    app.audit_trail(org)
        .await
        .into_iter()
        .filter(|action| action == "credits.purchase_flagged")
        .count()
}

#[tokio::test]
async fn a_credited_purchase_stripe_does_not_know_is_flagged_once_and_a_real_one_is_verified() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let real = purchase_events(&app, &stripe, &org, 40).await;
    app.deliver_events(&real).await;
    // A signed `payment_intent.succeeded` for a payment this Stripe account
    // never took (a replay from another account sharing the secret, say).
    let mut foreign = real
        .iter()
        .find(|event| event["type"] == "payment_intent.succeeded")
        .expect("the payment's event")
        .clone();
    foreign["id"] = "evt_from_elsewhere".into();
    foreign["data"]["object"]["id"] = "pi_from_elsewhere".into();
    foreign["data"]["object"]["amount_received"] = 2_500.into();
    app.deliver_events(&[foreign]).await;
    assert_eq!(
        app.balance_micros(&org).await,
        65 * DOLLAR,
        "both were credited"
    );

    let dry = reconcile(&app, As::Ops, "", true).await.expect("dry run");
    assert_eq!(
        (dry.purchases_checked, dry.purchases_verified),
        (2, 1),
        "{dry:?}"
    );
    assert_eq!(dry.flagged_purchases.len(), 1);
    assert_eq!(dry.flagged_purchases[0].payment_id, "pi_from_elsewhere");
    assert_eq!(dry.flagged_purchases[0].org_id, org);
    assert_eq!(
        dry.flagged_purchases[0].reason,
        "Stripe has no such payment"
    );
    assert_eq!(
        flagged_entries(&app, &org).await,
        0,
        "a dry run records nothing"
    );

    let run = reconcile(&app, As::Ops, "", false).await.expect("run");
    assert_eq!(
        (run.purchases_checked, run.purchases_verified),
        (2, 1),
        "{run:?}"
    );
    assert_eq!(run.flagged_purchases.len(), 1);
    assert_eq!(flagged_entries(&app, &org).await, 1);
    // Flagged, not taken back: that is an operator's decision.
    assert_eq!(app.balance_micros(&org).await, 65 * DOLLAR);

    // The verified purchase is not read again; the flagged one is, and is
    // not recorded twice.
    let reads = stripe.requests("GET /v1/payment_intents");
    let again = reconcile(&app, As::Ops, &org, false).await.expect("again");
    assert_eq!(
        (again.purchases_checked, again.purchases_verified),
        (1, 0),
        "{again:?}"
    );
    assert_eq!(stripe.requests("GET /v1/payment_intents") - reads, 1);
    assert_eq!(flagged_entries(&app, &org).await, 1);
}
