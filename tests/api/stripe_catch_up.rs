//! Catch-up from Stripe's Events API: events our endpoint never received
//! are listed, stored as if delivered, and applied once.

use billing_service::service::CatchUpReport;

use crate::helpers::{As, TestApp, spawn_app_with_stripe};

const OWNER: &str = "olive";

/// Runs catch-up now; if the start-up run still holds the lease, waits it out.
async fn catch_up(app: &TestApp) -> CatchUpReport {
    for _ in 0..200 {
        let report = app
            .service()
            .catch_up_stripe_events()
            .await
            .expect("catch-up");
        if report.ran {
            return report;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the catch-up lease was never free");
}

/// How each of the events was stored: (source, state, attempts).
async fn stored_as(app: &TestApp, ids: &[String]) -> Vec<(String, String, i32)> {
    sqlx::query_as(
        "select source, state, attempts from stripe_events where id = any($1) order by id",
    )
    .bind(ids)
    .fetch_all(&app.pool)
    .await
    .expect("stored events")
}

#[tokio::test]
async fn events_dropped_while_the_endpoint_is_away_are_found_by_catch_up_and_applied_once() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 3).await;
    let before = stripe.event_ids();

    // The endpoint is away: the renewal fails, then the period ends, and
    // enough happens that the listing takes several pages.
    stripe.set_deliveries_dropped(true);
    stripe.fail_renewal_payment(&sub);
    for _ in 0..60 {
        stripe.end_period(&sub);
    }
    stripe.fail_renewal_payment(&sub);
    let dropped: Vec<String> = stripe
        .event_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert!(dropped.len() > 100, "{} events", dropped.len());
    assert!(stripe.take_events().is_empty(), "nothing was delivered");
    assert_eq!(
        app.subscription_of(&org, As::User(OWNER)).await.status,
        "active",
        "without the events the subscription looks as it was"
    );

    let report = catch_up(&app).await;
    assert!(
        report.stored >= dropped.len() - 5,
        "stored {} of {} (a few may be of types we do not act on)",
        report.stored,
        dropped.len()
    );
    app.wait_for_inbox().await;
    let overview = app.subscription_of(&org, As::User(OWNER)).await;
    assert_eq!(overview.status, "past_due");
    assert_eq!(
        overview.status,
        stripe.subscription_json(&sub)["status"]
            .as_str()
            .expect("status")
    );
    let stored = stored_as(&app, &dropped).await;
    assert_eq!(stored.len(), report.stored);
    for (source, state, attempts) in &stored {
        assert_eq!(source, "catch_up");
        assert!(state == "applied" || state == "no_effect", "{state}");
        assert_eq!(*attempts, 1, "applied once");
    }

    // Again: nothing new. Then Stripe's own retries arrive after all:
    // acknowledged, and nothing is applied twice.
    let again = catch_up(&app).await;
    assert_eq!(again.stored, 0);
    assert!(again.listed >= report.stored, "the window is listed again");
    stripe.set_deliveries_dropped(false);
    for event in stripe.all_events() {
        assert_eq!(app.deliver(&event.to_string()).await, 200);
    }
    app.wait_for_inbox().await;
    for (_, _, attempts) in stored_as(&app, &dropped).await {
        assert_eq!(attempts, 1, "a late delivery is not applied again");
    }
}

#[tokio::test]
async fn the_cursor_is_stored_so_a_replica_starting_later_catches_up_from_it() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let (org, sub) = app.subscribed_org(&stripe, OWNER, 2).await;
    catch_up(&app).await;
    let cursor: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select listed_until from stripe_catch_up")
            .fetch_optional(&app.pool)
            .await
            .expect("cursor");
    assert!(cursor.is_some(), "the cursor is stored");

    stripe.set_deliveries_dropped(true);
    stripe.fail_renewal_payment(&sub);
    // A replica started now catches up on its way up.
    let replica = app.spawn_replica().await;
    for _ in 0..400 {
        if replica.subscription_of(&org, As::User(OWNER)).await.status == "past_due" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the replica's start-up catch-up did not find the dropped events");
}
