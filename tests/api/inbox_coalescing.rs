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
            ..TestOptions::with_stripe(&stripe)
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

/// Two replicas' workers on one subscription: the reading that was started
/// first but answered last is not stored over the newer one.
#[tokio::test]
async fn a_slow_older_reading_never_overwrites_a_newer_one() {
    let (first, stripe) = crate::helpers::spawn_app_with_stripe().await;
    let second = first.spawn_replica().await;
    let (org, sub) = first.subscribed_org(&stripe, OWNER, 3).await;
    let read = format!("GET /v1/subscriptions/{sub}");

    // The renewal payment fails: the worker that takes this event reads
    // slowly, and its reading says past_due.
    stripe.answer_next_late(&read, std::time::Duration::from_secs(2));
    stripe.update_status(&sub, "past_due");
    let reads_before = stripe.requests(&read);
    for event in stripe.take_events() {
        assert_eq!(first.deliver(&event.to_string()).await, 200);
    }
    for _ in 0..400 {
        if stripe.requests(&read) > reads_before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        stripe.requests(&read) > reads_before,
        "the slow reading started"
    );

    // The payment recovers while that reading is out: the other worker
    // reads "active" at once.
    stripe.update_status(&sub, "active");
    for event in stripe.take_events() {
        assert_eq!(second.deliver(&event.to_string()).await, 200);
    }
    first.wait_for_inbox().await;
    // Past the slow answer too.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    first.wait_for_inbox().await;
    assert_eq!(
        first.subscription_of(&org, As::User(OWNER)).await.status,
        "active",
        "the older reading (past_due), answered last, was not stored over the newer one"
    );
}

/// One replica's workers apply events of different subscriptions side by
/// side: an event whose reading is slow does not hold up another's.
#[tokio::test]
async fn a_slow_reading_does_not_hold_up_another_subscriptions_event() {
    let stripe = FakeStripe::start().await;
    let app = spawn_app_with(TestOptions {
        inbox_concurrency: 2,
        ..TestOptions::with_stripe(&stripe)
    })
    .await;
    let (slow_org, slow) = app.subscribed_org(&stripe, OWNER, 2).await;
    let (quick_org, quick) = app.subscribed_org(&stripe, "quinn", 2).await;

    // Far longer than the quick event takes: while it is out, one worker
    // is busy and only another can apply the quick event.
    stripe.answer_next_late(
        &format!("GET /v1/subscriptions/{slow}"),
        std::time::Duration::from_secs(15),
    );
    stripe.update_status(&slow, "past_due");
    for event in stripe.take_events() {
        assert_eq!(app.deliver(&event.to_string()).await, 200);
    }
    stripe.update_status(&quick, "past_due");
    for event in stripe.take_events() {
        assert_eq!(app.deliver(&event.to_string()).await, 200);
    }
    for _ in 0..400 {
        if app
            .subscription_of(&quick_org, As::User("quinn"))
            .await
            .status
            == "past_due"
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        app.subscription_of(&quick_org, As::User("quinn"))
            .await
            .status,
        "past_due",
        "the quick event was applied"
    );
    assert_eq!(
        app.subscription_of(&slow_org, As::User(OWNER)).await.status,
        "active",
        "while the slow reading was still out"
    );
    app.wait_for_inbox().await;
    assert_eq!(
        app.subscription_of(&slow_org, As::User(OWNER)).await.status,
        "past_due"
    );
}
