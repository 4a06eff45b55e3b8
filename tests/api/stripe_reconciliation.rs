//! Reconciliation: a subscription changed in Stripe with no event at all is
//! found, reported, and (unless it is a dry run) repaired.

use billing_service::grpc::proto;
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe};

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
