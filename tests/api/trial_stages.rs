//! Trial stages are announced from the clock by the background loop: once
//! per organization and stage, across restarts and clock jumps, and only
//! while the trial (not a paid subscription) decides access.

use std::sync::Arc;
use std::time::Duration;

use billing_service::service::Clock;
use chrono::TimeDelta;
use serde_json::Value;

use crate::helpers::{ManualClock, TestApp, TestOptions, spawn_app_with};

async fn stage_events(app: &TestApp, org: &str) -> Vec<Value> {
    app.events_of(org)
        .await
        .into_iter()
        .filter(|e| e.event_type == "trial.stage_changed")
        .map(|e| e.data)
        .collect()
}

/// Waits (5 s at most) until the organization has `n` stage events, then a
/// few more maintenance passes (100 ms each) to see that no more come.
async fn settle_on(app: &TestApp, org: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        if stage_events(app, org).await.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let events = stage_events(app, org).await;
    assert_eq!(events.len(), n, "{events:#?}");
    events
}

#[tokio::test]
async fn trial_stage_events_appear_once_each_across_a_restart_and_a_clock_jump() {
    let clock = Arc::new(ManualClock::default());
    let options = TestOptions {
        clock: Some(clock.clone()),
        ..TestOptions::default()
    };
    let first = spawn_app_with(options.clone()).await;
    let org = first.create_org("alice").await.id;
    let paying = first.create_org("bob").await.id;
    first.put_subscription(&paying, "active", 3).await;
    settle_on(&first, &org, 0).await;

    // 23.5 days on, 6 days remain: ending soon, announced once even with
    // a second replica looking too.
    clock.jump(TimeDelta::days(23) + TimeDelta::hours(12));
    let second = first.spawn_replica_with(options.clone()).await;
    let events = settle_on(&first, &org, 1).await;
    assert_eq!(events[0]["stage"], "TRIAL_STAGE_ENDING_SOON");
    assert_eq!(events[0]["previousStage"], "TRIAL_STAGE_UNSPECIFIED");
    assert_eq!(events[0]["daysRemaining"], "6");
    assert_eq!(events[0]["messagingSuppressed"], false);

    // Both replicas stop and one starts again: nothing is announced twice.
    first.stop().await;
    second.stop().await;
    let restarted = first.spawn_replica_with(options.clone()).await;
    settle_on(&restarted, &org, 1).await;

    // The clock jumps ten days (the service was down, say): the trial is
    // hard-expired now, and only that stage is announced, once.
    clock.jump(TimeDelta::days(10));
    let events = settle_on(&restarted, &org, 2).await;
    assert_eq!(events[1]["stage"], "TRIAL_STAGE_HARD_EXPIRED");
    assert_eq!(events[1]["previousStage"], "TRIAL_STAGE_ENDING_SOON");
    assert_eq!(events[1]["daysRemaining"], "-4");

    // A paying organization's trial passed the same stages silently.
    assert!(stage_events(&restarted, &paying).await.is_empty());
}

#[tokio::test]
async fn a_trial_moved_back_by_an_operator_announces_the_stages_it_enters_again() {
    let clock = Arc::new(ManualClock::default());
    let app = spawn_app_with(TestOptions {
        clock: Some(clock.clone()),
        ..TestOptions::default()
    })
    .await;
    let org = app.create_org("alice").await.id;
    clock.jump(TimeDelta::days(28));
    settle_on(&app, &org, 1).await;
    // Extended to 5 days from the (moved) now: ending soon again.
    let end = clock.now() + TimeDelta::days(5) + TimeDelta::hours(12);
    app.set_trial_end(&org, crate::helpers::timestamp(end))
        .await;
    let events = settle_on(&app, &org, 2).await;
    assert_eq!(events[0]["stage"], "TRIAL_STAGE_ENDING_VERY_SOON");
    assert_eq!(events[1]["stage"], "TRIAL_STAGE_ENDING_SOON");
    assert_eq!(events[1]["previousStage"], "TRIAL_STAGE_UNSPECIFIED");
}
