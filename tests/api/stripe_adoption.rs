//! Adopting existing Stripe customers: a team moving to this service
//! brings its customers and live subscriptions.

use billing_service::grpc::proto;
use serde_json::json;
use tonic::Code;

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe};

const OWNER: &str = "ada";

async fn attach(
    app: &TestApp,
    who: As<'_>,
    org: &str,
    customer: &str,
) -> Result<proto::Subscription, tonic::Status> {
    app.billing()
        .attach_stripe_customer(request(
            who,
            proto::AttachStripeCustomerRequest {
                org_id: org.to_owned(),
                customer_id: customer.to_owned(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_existing_customer_with_a_live_subscription_is_adopted_with_its_plan_cycle_and_seats() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let customer = stripe.create_customer_outside("Acme", json!({}));
    let sub = stripe.subscribe_directly(&customer, "price_teams_yearly", 7);
    // Sent before the adoption, about a customer of nobody of ours yet.
    app.deliver_all(&stripe).await;
    assert!(
        !app.subscription_of(&org, As::User(OWNER))
            .await
            .has_subscription
    );

    let adopted = attach(&app, As::Ops, &org, &customer)
        .await
        .expect("adopted");
    assert!(adopted.has_subscription);
    assert_eq!(adopted.plan, "teams");
    assert_eq!(adopted.billing_cycle(), proto::BillingCycle::Yearly);
    assert_eq!(adopted.paid_seats, 7);
    assert_eq!(adopted.status, "active");
    assert!(adopted.counts_for_access);
    assert_eq!(
        stripe.customer_json(&customer)["metadata"]["org_id"],
        json!(org)
    );
    assert_eq!(
        stripe.subscription_json(&sub)["metadata"]["org_id"],
        json!(org)
    );
    assert!(app.check(&org, OWNER).await.allowed);

    // Again: the same answer, nothing new in Stripe.
    let again = attach(&app, As::Ops, &org, &customer).await.expect("again");
    assert_eq!(again.paid_seats, 7);
    // Its events now reach the organization.
    stripe.end_period(&sub);
    app.deliver_all(&stripe).await;
    let renewed = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(renewed.paid_seats, 7);
    let end = |s: &proto::Subscription| s.current_period_end.as_ref().map(|t| t.seconds);
    assert!(end(&renewed) > end(&adopted), "the renewal was applied");
}

#[tokio::test]
async fn a_customer_with_two_live_subscriptions_or_of_another_organization_is_refused() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org(OWNER).await.id;
    let twice = stripe.create_customer_outside("Twice", json!({}));
    let first = stripe.subscribe_directly(&twice, "price_teams_monthly", 2);
    let second = stripe.subscribe_directly(&twice, "price_teams_yearly", 3);
    let refused = expect_code(
        attach(&app, As::Ops, &org, &twice).await,
        Code::FailedPrecondition,
    );
    assert!(
        refused.message().contains(&first) && refused.message().contains(&second),
        "{}",
        refused.message()
    );
    assert!(
        stripe.customer_json(&twice)["metadata"]
            .get("org_id")
            .is_none(),
        "nothing was labelled"
    );
    assert!(
        !app.subscription_of(&org, As::User(OWNER))
            .await
            .has_subscription
    );

    // A customer adopted by one organization is not another's.
    let single = stripe.create_customer_outside("Single", json!({}));
    stripe.subscribe_directly(&single, "price_teams_monthly", 1);
    attach(&app, As::Ops, &org, &single).await.expect("adopted");
    let other = app.create_org("bob").await.id;
    let taken = expect_code(
        attach(&app, As::Ops, &other, &single).await,
        Code::FailedPrecondition,
    );
    assert!(taken.message().contains(&org), "{}", taken.message());
    // Nor can the first organization switch to another customer.
    expect_code(
        attach(&app, As::Ops, &org, &twice).await,
        Code::FailedPrecondition,
    );
    // A customer whose metadata names another organization.
    let labelled = stripe.create_customer_outside("Labelled", json!({ "org_id": other }));
    let third = app.create_org("cyd").await.id;
    expect_code(
        attach(&app, As::Ops, &third, &labelled).await,
        Code::FailedPrecondition,
    );

    expect_code(
        attach(&app, As::User(OWNER), &org, &single).await,
        Code::PermissionDenied,
    );
    expect_code(
        attach(&app, As::Ops, &third, "acct_1").await,
        Code::InvalidArgument,
    );
    expect_code(
        attach(&app, As::Ops, &third, "cus_nobody").await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn a_bulk_import_adopts_the_customers_whose_metadata_names_an_organization_after_a_dry_run() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let alpha = app.create_org("alpha").await.id;
    let beta = app.create_org("beta").await.id;
    let named = stripe.create_customer_outside("Alpha Inc", json!({ "org_id": alpha }));
    let sub = stripe.subscribe_directly(&named, "price_teams_monthly", 4);
    let doubled = stripe.create_customer_outside("Beta Inc", json!({ "org_id": beta }));
    stripe.subscribe_directly(&doubled, "price_teams_monthly", 1);
    stripe.subscribe_directly(&doubled, "price_teams_monthly", 2);
    stripe.create_customer_outside("Nobody of ours", json!({}));
    app.deliver_all(&stripe).await;
    let import = |dry_run| {
        let mut billing = app.billing();
        async move {
            billing
                .import_stripe_customers(request(
                    As::Ops,
                    proto::ImportStripeCustomersRequest { dry_run },
                ))
                .await
                .expect("import")
                .into_inner()
                .customers
        }
    };
    let outcome_of = |report: &[proto::ImportedStripeCustomer], customer: &str| {
        report
            .iter()
            .find(|c| c.customer_id == customer)
            .map(|c| (c.outcome(), c.subscription_id.clone()))
    };

    let dry = import(true).await;
    assert_eq!(dry.len(), 2, "only customers naming one of ours: {dry:?}");
    assert_eq!(
        outcome_of(&dry, &named),
        Some((proto::ImportOutcome::WouldAdopt, sub.clone()))
    );
    assert_eq!(
        outcome_of(&dry, &doubled).map(|o| o.0),
        Some(proto::ImportOutcome::Refused)
    );
    assert!(
        !app.subscription_of(&alpha, As::User("alpha"))
            .await
            .has_subscription,
        "a dry run changes nothing"
    );

    let real = import(false).await;
    assert_eq!(
        outcome_of(&real, &named),
        Some((proto::ImportOutcome::Adopted, sub.clone()))
    );
    let refused = real
        .iter()
        .find(|c| c.customer_id == doubled)
        .expect("reported");
    assert!(
        refused.reason.contains("live subscriptions"),
        "{}",
        refused.reason
    );
    let adopted = app.subscription_of(&alpha, As::User("alpha")).await;
    assert_eq!((adopted.paid_seats, adopted.status.as_str()), (4, "active"));
    assert!(
        !app.subscription_of(&beta, As::User("beta"))
            .await
            .has_subscription
    );

    let again = import(false).await;
    assert_eq!(
        outcome_of(&again, &named).map(|o| o.0),
        Some(proto::ImportOutcome::LinkedAlready)
    );
    expect_code(
        app.billing()
            .import_stripe_customers(request(
                As::User("alpha"),
                proto::ImportStripeCustomersRequest { dry_run: true },
            ))
            .await,
        Code::PermissionDenied,
    );
}
