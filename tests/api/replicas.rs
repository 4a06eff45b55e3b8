//! Entitlements from memory across replicas: change notifications,
//! reloading after a lost listener connection, and read-your-writes with
//! `min_version`.

use std::time::Duration;

use billing_service::domain::entitlement::StateVersion;
use billing_service::grpc::STATE_VERSION_HEADER;
use billing_service::grpc::proto::{self, EntitlementReason};
use chrono::{TimeDelta, Utc};

use crate::helpers::{As, TestApp, request, spawn_app, trial_end_in_days};

/// Moves the trial end as an operator on `app`; returns the version the
/// change committed.
async fn set_trial_end_on(app: &TestApp, org: &str, days: i64) -> u64 {
    let response = app
        .org_admin()
        .set_trial_end(request(
            As::Ops,
            proto::SetTrialEndRequest {
                org_id: org.to_owned(),
                trial_end: Some(trial_end_in_days(days)),
            },
        ))
        .await
        .expect("set trial end");
    response
        .metadata()
        .get(STATE_VERSION_HEADER)
        .expect("mutations return their version")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number")
}

async fn check_at(
    app: &TestApp,
    org: &str,
    user: &str,
    min_version: Option<u64>,
) -> proto::CheckEntitlementResponse {
    app.entitlements()
        .check_entitlement(request(
            As::Gateway,
            proto::CheckEntitlementRequest {
                org_id: org.to_owned(),
                user_id: user.to_owned(),
                feature: "proxy".into(),
                min_version,
                ..Default::default()
            },
        ))
        .await
        .expect("check")
        .into_inner()
}

/// Polls `app` until the user's reason is `want`; returns how many polls.
async fn until_reason(app: &TestApp, org: &str, user: &str, want: EntitlementReason) -> usize {
    for polls in 1..=400 {
        if check_at(app, org, user, None).await.reason() == want {
            return polls;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the replica never answered {want:?}");
}

#[tokio::test]
async fn a_change_committed_on_one_replica_reaches_the_other_through_notify() {
    let a = spawn_app().await;
    let b = a.spawn_replica().await;
    let org = a.create_org("alice").await;
    // B learns of the new organization from the announcement.
    until_reason(&b, &org.id, "alice", EntitlementReason::TrialActive).await;

    let version = set_trial_end_on(&a, &org.id, -10).await;
    until_reason(&b, &org.id, "alice", EntitlementReason::TrialExpired).await;
    let answer = check_at(&b, &org.id, "alice", None).await;
    // The answer stands at least at the change it reflects, even when B
    // read the organization for an earlier announcement after the change
    // committed, before the change's own announcement moved its watermark.
    assert!(answer.state_version >= version);
    assert!(
        b.cache()
            .wait_for(StateVersion(version), Duration::from_secs(5))
            .await,
        "the change's announcement moves B's watermark"
    );

    // A member added on B is known on A.
    b.add_member(&org.id, "bob", proto::Role::Member).await;
    until_reason(&a, &org.id, "bob", EntitlementReason::TrialExpired).await;
}

#[tokio::test]
async fn min_version_gives_read_your_writes_across_replicas_with_no_stale_answer() {
    let a = spawn_app().await;
    let b = a.spawn_replica().await;
    let org = a.create_org("alice").await;
    let mut stale = 0;
    for round in 0..20 {
        let expired = round % 2 == 0;
        let version = set_trial_end_on(&a, &org.id, if expired { -10 } else { 10 }).await;
        // Asked at once on the other replica, with the version just written.
        let answer = check_at(&b, &org.id, "alice", Some(version)).await;
        let want = if expired {
            EntitlementReason::TrialExpired
        } else {
            EntitlementReason::TrialActive
        };
        if answer.reason() != want {
            stale += 1;
        }
        assert!(answer.state_version >= version, "round {round}");
    }
    assert_eq!(stale, 0, "answers older than a version the caller had seen");

    // A version nobody committed yet is not claimed: the answer says where it stands.
    let clock = b.cache().watermark().0;
    let ahead = check_at(&b, &org.id, "alice", Some(clock + 1_000)).await;
    assert!(ahead.state_version < clock + 1_000);
}

#[tokio::test]
async fn a_replica_reloads_what_it_missed_while_its_listener_was_disconnected() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await;
    assert_eq!(
        check_at(&app, &org.id, "alice", None).await.reason(),
        EntitlementReason::TrialActive
    );

    // A change whose announcement is lost: written with triggers off, its
    // version taken by hand, no NOTIFY.
    let mut tx = app.pool.begin().await.expect("tx");
    for statement in [
        "set local session_replication_role = replica".to_owned(),
        format!(
            "update organizations set trial_end = '{}' where id = '{}'",
            (Utc::now() - TimeDelta::days(10)).to_rfc3339(),
            org.id
        ),
        "update entitlement_clock set version = version + 1".to_owned(),
        format!(
            "update entitlement_versions set version = (select version from entitlement_clock) \
             where org_id = '{}'",
            org.id
        ),
    ] {
        sqlx::query(&statement)
            .execute(&mut *tx)
            .await
            .expect("write");
    }
    tx.commit().await.expect("commit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        check_at(&app, &org.id, "alice", None).await.reason(),
        EntitlementReason::TrialActive,
        "nothing announced it"
    );

    // The listener's connection drops; on reconnecting it reads what
    // changed since its watermark.
    let dropped: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("terminate the listener");
    assert_eq!(dropped, [true]);
    until_reason(&app, &org.id, "alice", EntitlementReason::TrialExpired).await;
}

#[tokio::test]
async fn an_organization_created_a_moment_ago_on_another_replica_is_read_from_the_database() {
    let a = spawn_app().await;
    let b = a.spawn_replica().await;
    let org = a.create_org("alice").await;
    // Whether or not B has heard of it yet, it answers for it.
    let answer = check_at(&b, &org.id, "alice", None).await;
    assert_eq!(answer.reason(), EntitlementReason::TrialActive);
}
