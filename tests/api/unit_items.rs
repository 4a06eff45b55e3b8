//! Quantity-billed items: reported counts drive the plan's per-unit item on
//! the Stripe subscription.

use billing_service::grpc::proto::{self, BillingCycle};
use tonic::{Code, Status};

use crate::helpers::{As, TestApp, expect_code, request, spawn_app_with_stripe};
use crate::stripe_server::FakeStripe;

const MONTHLY_UNIT_PRICE: &str = "price_hosted_instances_monthly";

async fn report(
    app: &TestApp,
    org: &str,
    item: &str,
    count: i64,
) -> Result<proto::ReportUsageQuantityResponse, Status> {
    app.entitlements()
        .report_usage_quantity(request(
            As::Gateway,
            proto::ReportUsageQuantityRequest {
                org_id: org.to_owned(),
                item: item.to_owned(),
                count,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Writes to Stripe's subscription items so far.
fn item_writes(stripe: &FakeStripe) -> Vec<serde_json::Value> {
    let mut writes = stripe.writes("POST /v1/subscription_items");
    writes.extend(stripe.writes("DELETE /v1/subscription_items"));
    writes
}

#[tokio::test]
async fn quantity_sync_follows_the_allowance_and_adds_and_removes_the_item() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org_on("alice", Some("teams")).await;

    // Before any subscription the count is only recorded.
    let early = report(&app, &org.id, "hosted_instances", 5)
        .await
        .expect("report");
    assert_eq!(early.billed_quantity, 3, "5 used, 2 included");
    assert_eq!(early.stripe_subscription_id, "");
    assert!(item_writes(&stripe).is_empty());

    // The subscription starts: the recorded count is applied to it.
    let sub = app
        .subscribe(&stripe, &org.id, "alice", "teams", BillingCycle::Monthly, 1)
        .await;
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(3));
    let added = item_writes(&stripe);
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["proration_behavior"], "always_invoice");
    app.deliver_all(&stripe).await;

    // The same count again makes no Stripe call.
    let same = report(&app, &org.id, "hosted_instances", 5)
        .await
        .expect("report");
    assert_eq!(same.stripe_subscription_id, sub);
    assert_eq!(item_writes(&stripe).len(), 1);

    // Within the allowance the item goes away.
    let within = report(&app, &org.id, "hosted_instances", 2)
        .await
        .expect("report");
    assert_eq!(within.billed_quantity, 0);
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), None);
    assert_eq!(stripe.writes("DELETE /v1/subscription_items").len(), 1);
    report(&app, &org.id, "hosted_instances", 1)
        .await
        .expect("report");
    assert_eq!(item_writes(&stripe).len(), 2, "still zero: no call");

    // Back above it, the item is added afresh (not a replay of the first add).
    report(&app, &org.id, "hosted_instances", 4)
        .await
        .expect("report");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(2));
    // A decrease is not prorated.
    report(&app, &org.id, "hosted_instances", 3)
        .await
        .expect("report");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(1));
    let last = item_writes(&stripe).pop().expect("write");
    assert_eq!(last["proration_behavior"], "none");

    // Our copy of the subscription follows: $18 seat + $10 unit.
    app.deliver_all(&stripe).await;
    let subscription = app.subscription_of(&org.id, As::User("alice")).await;
    assert_eq!(subscription.paid_seats, 1, "units are not seats");
    assert_eq!(
        subscription
            .next_payment
            .expect("next payment")
            .amount_minor,
        2800
    );
}

#[tokio::test]
async fn an_enterprise_minimum_is_bought_at_checkout_and_never_goes_below_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org_on("alice", Some("enterprise")).await;
    let sub = app
        .subscribe(
            &stripe,
            &org.id,
            "alice",
            "enterprise",
            BillingCycle::Monthly,
            2,
        )
        .await;
    // The checkout sold the commitment: three units from the start.
    let checkout = &stripe.writes("POST /v1/checkout/sessions")[0];
    assert_eq!(checkout["line_items"][1]["price"], MONTHLY_UNIT_PRICE);
    assert_eq!(checkout["line_items"][1]["quantity"], "3");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(3));
    // Counts under the minimum bill the minimum, and change nothing.
    for count in [1, 0] {
        let under = report(&app, &org.id, "hosted_instances", count)
            .await
            .expect("report");
        assert_eq!(under.billed_quantity, 3);
    }
    assert!(item_writes(&stripe).is_empty());
    report(&app, &org.id, "hosted_instances", 5)
        .await
        .expect("report");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(5));
    // Back down: to the minimum, never below it, and never removed.
    report(&app, &org.id, "hosted_instances", 0)
        .await
        .expect("report");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(3));
    assert!(stripe.writes("DELETE /v1/subscription_items").is_empty());
}

#[tokio::test]
async fn quantity_reports_are_validated_and_only_for_the_gateway_and_operators() {
    let (app, _stripe) = spawn_app_with_stripe().await;
    let org = app.create_org("alice").await;
    expect_code(
        report(&app, &org.id, "gpus", 1).await,
        Code::InvalidArgument,
    );
    expect_code(
        report(&app, &org.id, "hosted_instances", -1).await,
        Code::InvalidArgument,
    );
    let from_bff = app
        .entitlements()
        .report_usage_quantity(request(
            As::User("alice"),
            proto::ReportUsageQuantityRequest {
                org_id: org.id.clone(),
                item: "hosted_instances".into(),
                count: 1,
            },
        ))
        .await;
    expect_code(from_bff, Code::PermissionDenied);
}

#[tokio::test]
async fn a_billing_cycle_change_moves_the_unit_item_to_the_new_cycle_too() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = app.create_org_on("alice", Some("teams")).await;
    let sub = app
        .subscribe(&stripe, &org.id, "alice", "teams", BillingCycle::Monthly, 3)
        .await;
    report(&app, &org.id, "hosted_instances", 3)
        .await
        .expect("report");
    assert_eq!(stripe.item_quantity(&sub, MONTHLY_UNIT_PRICE), Some(1));
    app.deliver_all(&stripe).await;

    let changed = app
        .billing()
        .change_billing_cycle(request(
            As::User("alice"),
            proto::ChangeBillingCycleRequest {
                org_id: org.id.clone(),
                billing_cycle: BillingCycle::Yearly.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("change cycle")
        .into_inner();
    let schedule = stripe.schedule_of(&sub).expect("schedule");
    let next: Vec<(String, u64)> = schedule["phases"][1]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            (
                item["price"]["id"].as_str().expect("price").to_owned(),
                item["quantity"].as_u64().expect("quantity"),
            )
        })
        .collect();
    assert!(
        next.contains(&("price_teams_yearly".to_owned(), 3)),
        "{next:?}"
    );
    assert!(
        next.contains(&("price_hosted_instances_yearly".to_owned(), 1)),
        "{next:?}"
    );
    // 3 seats at $180 and one unit at $100 a year.
    let pending = changed.pending_cycle_change.expect("pending change");
    assert_eq!(pending.next_payment.expect("payment").amount_minor, 64_000);
}
