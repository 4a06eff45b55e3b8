//! WatchEntitlements: the current state, then each change as it commits;
//! resuming from a version; a resync when the caller is too far behind.

use std::time::Duration;

use billing_service::grpc::proto::entitlement_update::Update;
use billing_service::grpc::proto::{self, AccessState, Role};
use tonic::Streaming;

use crate::helpers::{
    As, TestApp, TestOptions, request, spawn_app, spawn_app_with, trial_end_in_days,
};

async fn watch(
    app: &TestApp,
    orgs: &[&str],
    resume_from: Option<u64>,
) -> Streaming<proto::EntitlementUpdate> {
    app.entitlements()
        .watch_entitlements(request(
            As::Gateway,
            proto::WatchEntitlementsRequest {
                org_ids: orgs.iter().map(|o| (*o).to_owned()).collect(),
                resume_from,
            },
        ))
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Streaming<proto::EntitlementUpdate>) -> proto::EntitlementUpdate {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an update in time")
        .expect("stream ok")
        .expect("stream open")
}

/// Updates up to and including the end of the snapshot.
async fn snapshot(
    stream: &mut Streaming<proto::EntitlementUpdate>,
) -> (Vec<proto::EntitlementUpdate>, u64) {
    let mut updates = Vec::new();
    loop {
        let update = next(stream).await;
        if let Some(Update::SnapshotComplete(true)) = update.update {
            return (updates, update.version);
        }
        updates.push(update);
    }
}

fn org_of(update: &proto::EntitlementUpdate) -> Option<&proto::OrgEntitlements> {
    match &update.update {
        Some(Update::Organization(org)) => Some(org),
        _ => None,
    }
}

#[tokio::test]
async fn a_watch_sends_the_current_state_then_each_change_and_resumes_from_a_version() {
    let app = spawn_app().await;
    let first = app.create_org("alice").await;
    let second = app.create_org("zed").await;

    let mut stream = watch(&app, &[], None).await;
    let (initial, at) = snapshot(&mut stream).await;
    let mut ids: Vec<&str> = initial
        .iter()
        .filter_map(org_of)
        .map(|o| o.org_id.as_str())
        .collect();
    ids.sort_unstable();
    let mut want = vec![first.id.as_str(), second.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let alice = initial
        .iter()
        .filter_map(org_of)
        .find(|o| o.org_id == first.id)
        .expect("first");
    assert_eq!(alice.access(), AccessState::Trial);
    assert_eq!(alice.members.len(), 1);

    // A change arrives with a newer version and the whole new state.
    app.add_member(&first.id, "bob", Role::Member).await;
    let mut seen = at;
    let changed = loop {
        let update = next(&mut stream).await;
        assert!(update.version > at);
        seen = seen.max(update.version);
        if let Some(org) = org_of(&update) {
            // The state may be newer than the change that announced it.
            seen = seen.max(org.version);
            if org.members.iter().any(|m| m.user_id == "bob") {
                break org.clone();
            }
        }
    };
    assert_eq!(changed.org_id, first.id);
    assert_eq!(changed.used_seats, 2);
    drop(stream);

    // While the caller is away, the second organization's trial expires.
    app.set_trial_end(&second.id, trial_end_in_days(-10)).await;
    let mut resumed = watch(&app, &[], Some(seen)).await;
    let (missed, _) = snapshot(&mut resumed).await;
    let missed: Vec<&proto::OrgEntitlements> = missed.iter().filter_map(org_of).collect();
    assert_eq!(missed.len(), 1, "only what changed since");
    assert_eq!(missed[0].org_id, second.id);
    assert_eq!(missed[0].access(), AccessState::TrialExpired);

    // A watch of one organization hears nothing of the other.
    let mut only_first = watch(&app, &[&first.id], None).await;
    let (initial, _) = snapshot(&mut only_first).await;
    assert_eq!(initial.len(), 1);
    app.set_trial_end(&second.id, trial_end_in_days(10)).await;
    app.set_trial_end(&first.id, trial_end_in_days(5)).await;
    let update = next(&mut only_first).await;
    assert_eq!(org_of(&update).expect("org").org_id, first.id);
}

#[tokio::test]
async fn a_caller_too_far_behind_is_told_to_resync_and_gets_a_full_snapshot() {
    let app = spawn_app_with(TestOptions {
        watch_log_capacity: 3,
        ..TestOptions::default()
    })
    .await;
    let org = app.create_org("alice").await;
    let mut stream = watch(&app, &[], None).await;
    let (_, at) = snapshot(&mut stream).await;
    drop(stream);
    for days in [10, 11, 12, 13, 14] {
        app.set_trial_end(&org.id, trial_end_in_days(days)).await;
    }
    let mut behind = watch(&app, &[], Some(at)).await;
    let first = next(&mut behind).await;
    assert_eq!(first.update, Some(Update::Resync(true)));
    let (full, _) = snapshot(&mut behind).await;
    assert_eq!(full.iter().filter_map(org_of).count(), 1);

    // Members of the BFF may not watch.
    let refused = app
        .entitlements()
        .watch_entitlements(request(
            As::User("alice"),
            proto::WatchEntitlementsRequest::default(),
        ))
        .await;
    assert!(refused.is_err());
}
