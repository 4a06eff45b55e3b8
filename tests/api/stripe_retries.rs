//! A Stripe write that is rate-limited is sent again within the call, under
//! the key of the recorded operation, and the caller never notices; one
//! that stays limited answers UNAVAILABLE with a retry delay and is
//! completed by the operations loop with that same key.

use std::time::Duration;

use billing_service::grpc::proto::BillingCycle;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{As, TestApp, expect_code, spawn_app_with_stripe};
use crate::stripe_server::FakeStripe;

const OWNER: &str = "owner-1";
const SUBSCRIPTION_UPDATES: &str = "POST /v1/subscriptions/sub";

async fn subscribed_with_three_seats(app: &TestApp, stripe: &FakeStripe) -> String {
    let org = app.create_org(OWNER).await.id;
    app.subscribe(stripe, &org, OWNER, "teams", BillingCycle::Monthly, 3)
        .await;
    org
}

/// The keys of the attempts, which must all be the one key.
fn one_key(keys: &[Option<String>]) -> String {
    let first = keys[0].clone().expect("an idempotency key");
    assert!(keys.iter().all(|k| k.as_ref() == Some(&first)), "{keys:?}");
    first
}

#[tokio::test]
async fn a_seat_increase_rate_limited_twice_succeeds_within_the_call_under_one_key() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = subscribed_with_three_seats(&app, &stripe).await;

    stripe.rate_limit_next_to(SUBSCRIPTION_UPDATES, 2);
    let grown = app
        .set_seats(As::User(OWNER), &org, 5, None)
        .await
        .expect("the 429s are retried");
    assert_eq!(grown.subscription.expect("overview").paid_seats, 5);
    assert_eq!(stripe.rate_limited_answers(), 2);
    let keys = stripe.write_attempt_keys(SUBSCRIPTION_UPDATES);
    assert_eq!(keys.len(), 3, "two 429s, then the update: {keys:?}");
    one_key(&keys);
    // Stripe applied the change once.
    assert_eq!(stripe.writes(SUBSCRIPTION_UPDATES).len(), 1);
    // Each attempt is a Stripe request in the metrics, by its outcome.
    let metrics = crate::metrics::scrape(&app).await;
    let requests = |outcome| {
        crate::metrics::value(
            &metrics,
            "billing_stripe_requests_total",
            &[("endpoint", "update_subscription"), ("outcome", outcome)],
        )
    };
    assert_eq!((requests("rate_limited"), requests("ok")), (2.0, 1.0));
}

#[tokio::test]
async fn a_seat_increase_stripe_keeps_limiting_is_unavailable_then_completed_with_the_same_key() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let org = subscribed_with_three_seats(&app, &stripe).await;

    stripe.rate_limit_next_to(SUBSCRIPTION_UPDATES, 3);
    let status = expect_code(
        app.set_seats(As::User(OWNER), &org, 5, None).await,
        Code::Unavailable,
    );
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(delay > Duration::ZERO, "{delay:?}");
    assert_eq!(stripe.writes(SUBSCRIPTION_UPDATES).len(), 0);

    // The operations loop sends it again, under the same key, and it lands.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stripe.writes(SUBSCRIPTION_UPDATES).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = stripe.write_attempt_keys(SUBSCRIPTION_UPDATES);
    assert_eq!(keys.len(), 4, "three 429s, then the update: {keys:?}");
    one_key(&keys);
    app.deliver_all(&stripe).await;
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.paid_seats,
        5
    );
}
