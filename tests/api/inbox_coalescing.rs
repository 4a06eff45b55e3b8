//! One reading of a subscription applies every event about it that was
//! stored before the reading began.

use billing_service::grpc::proto;

use crate::helpers::{As, TestOptions, catalog_with_stripe_prices, spawn_app_with};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "cora";
const CUSTOMER: &str = "cus_coalesced";

#[tokio::test]
async fn ten_events_for_one_subscription_are_applied_with_one_reading() {
    let stripe = FakeStripe::start().await;
    // This replica only receives webhooks: with no Stripe key it runs no
    // inbox worker, so the events wait until one that reaches Stripe starts.
    let receiver = spawn_app_with(TestOptions {
        catalog: catalog_with_stripe_prices(),
        ..TestOptions::default()
    })
    .await;
    let org = receiver.create_org(OWNER).await.id;
    sqlx::query("update organizations set stripe_customer_id = $1 where id = $2::uuid")
        .bind(CUSTOMER)
        .bind(&org)
        .execute(&receiver.pool)
        .await
        .expect("link the customer");
    let sub = stripe.subscribe_directly(CUSTOMER, "price_teams_monthly", 3);
    for _ in 0..4 {
        stripe.end_period(&sub);
    }
    stripe.fail_renewal_payment(&sub);
    let events = stripe.take_events();
    assert!(events.len() >= 10, "{} events", events.len());
    for event in &events {
        assert_eq!(receiver.deliver(&event.to_string()).await, 200);
    }
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from stripe_events where subscription_id = $1 and state = 'pending'",
    )
    .bind(&sub)
    .fetch_one(&receiver.pool)
    .await
    .expect("count");
    assert_eq!(waiting, i64::try_from(events.len()).expect("count"));

    let read = format!("GET /v1/subscriptions/{sub}");
    assert_eq!(stripe.requests(&read), 0);
    let worker = receiver
        .spawn_replica_with(TestOptions {
            catalog: catalog_with_stripe_prices(),
            stripe_api_base: Some(stripe.base_url.clone()),
            ..TestOptions::default()
        })
        .await;
    worker.wait_for_inbox().await;
    assert_eq!(stripe.requests(&read), 1, "one reading for every event");
    let states: Vec<(String, i32)> =
        sqlx::query_as("select state, attempts from stripe_events where subscription_id = $1")
            .bind(&sub)
            .fetch_all(&worker.pool)
            .await
            .expect("states");
    assert_eq!(states.len(), events.len());
    assert!(
        states
            .iter()
            .all(|(state, attempts)| state == "applied" && *attempts == 1),
        "{states:?}"
    );
    let overview = worker.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.status, "past_due");
    assert_eq!(overview.paid_seats, 3);
    assert_eq!(overview.billing_cycle(), proto::BillingCycle::Monthly);
}
