//! `WatchBillingEvents`: stored events, then live ones, in commit order,
//! resumable from any retained event with no gap and no duplicate.

use billing_service::grpc::proto::{self, Role};
use tonic::Code;

use crate::event_helpers::{assert_quiet, next_events};
use crate::helpers::{As, expect_code, request, spawn_app};

fn ids(events: &[proto::BillingEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

#[tokio::test]
async fn a_watch_resumes_from_an_event_id_with_no_gap_and_no_duplicate() {
    let app = spawn_app().await;
    let org = app.create_org("alice").await.id;
    for n in 0..5 {
        app.invite(
            As::User("alice"),
            &org,
            &format!("user{n}@example.com"),
            Role::Member,
        )
        .await
        .expect("invite");
    }
    let mut watch = app
        .watch_events(proto::WatchBillingEventsRequest {
            from_oldest: true,
            ..Default::default()
        })
        .await;
    let first = next_events(&mut watch, 4).await;
    drop(watch);
    // While the watcher is away, more happens.
    app.grant(&org, 1_000_000, "while-away").await;
    app.create_org("bob").await;

    let resume_from = first.last().expect("an event").id.clone();
    let mut watch = app
        .watch_events(proto::WatchBillingEventsRequest {
            from_event_id: resume_from,
            ..Default::default()
        })
        .await;
    let committed: Vec<String> = app
        .all_events()
        .await
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(committed.len(), 8);
    let rest = next_events(&mut watch, committed.len() - 4).await;
    let mut seen = ids(&first);
    seen.extend(ids(&rest));
    assert_eq!(seen, committed, "every event once, in commit order");
    assert_quiet(&mut watch).await;

    // Then live: the next commit arrives as it happens, with its version.
    let live = app
        .invite(As::User("alice"), &org, "late@example.com", Role::Member)
        .await
        .expect("invite");
    let next = next_events(&mut watch, 1).await;
    assert_eq!(next[0].r#type, "member.invited");
    let Some(proto::billing_event::Data::MemberInvited(invited)) = &next[0].data else {
        panic!("member.invited data: {:?}", next[0].data);
    };
    assert_eq!(invited.invitation_id, live.id);
    assert_eq!(next[0].schema_version, 1);
    let stored = app.all_events().await;
    let last = stored.last().expect("stored");
    assert_eq!(next[0].state_version, last.state_version as u64);
    assert!(rest.last().expect("an event").state_version < next[0].state_version);
}

#[tokio::test]
async fn a_watch_under_concurrent_writers_sees_every_event_in_commit_order() {
    let app = spawn_app().await;
    let mut watch = app
        .watch_events(proto::WatchBillingEventsRequest::default())
        .await;
    // Eight writers at once, each creating organizations.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = &app;
            async move {
                for n in 0..5 {
                    app.create_org(&format!("writer-{w}-{n}")).await;
                }
            }
        })
        .collect();
    futures_util::future::join_all(writers).await;
    let committed: Vec<String> = app
        .all_events()
        .await
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(committed.len(), 40);
    let streamed = next_events(&mut watch, 40).await;
    assert_eq!(ids(&streamed), committed);
    assert!(
        streamed
            .windows(2)
            .all(|w| w[0].state_version < w[1].state_version)
    );
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn a_watch_filters_by_type_and_organization_and_refuses_an_unknown_start() {
    let app = spawn_app().await;
    let a = app.create_org("alice").await.id;
    let b = app.create_org("bob").await.id;
    app.add_member(&a, "carol", Role::Member).await;
    app.add_member(&b, "dave", Role::Member).await;
    let mut watch = app
        .watch_events(proto::WatchBillingEventsRequest {
            from_oldest: true,
            types: vec!["member.joined".into()],
            org_ids: vec![b.clone()],
            ..Default::default()
        })
        .await;
    let got = next_events(&mut watch, 1).await;
    assert_eq!(
        (got[0].r#type.as_str(), got[0].org_id.as_str()),
        ("member.joined", b.as_str())
    );
    assert_quiet(&mut watch).await;

    let unknown = app
        .events()
        .watch_billing_events(request(
            As::Ops,
            proto::WatchBillingEventsRequest {
                from_event_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            },
        ))
        .await;
    let status = expect_code(unknown, Code::FailedPrecondition);
    assert!(status.message().contains("retention"), "{status:?}");
    let bad_type = app
        .events()
        .watch_billing_events(request(
            As::Ops,
            proto::WatchBillingEventsRequest {
                types: vec!["member.exploded".into()],
                ..Default::default()
            },
        ))
        .await;
    expect_code(bad_type, Code::InvalidArgument);
    let gateway = app
        .events()
        .watch_billing_events(request(
            As::Gateway,
            proto::WatchBillingEventsRequest::default(),
        ))
        .await;
    expect_code(gateway, Code::PermissionDenied);
}

#[tokio::test]
async fn events_past_the_retention_are_dropped_and_a_watch_from_one_is_refused() {
    let clock = std::sync::Arc::new(crate::helpers::ManualClock::default());
    let app = crate::helpers::spawn_app_with(crate::helpers::TestOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let old = app.create_org("alice").await.id;
    let first = app.events_of(&old).await[0].id.to_string();
    // 31 days on: the default retention (30 days) is past.
    clock.jump(chrono::TimeDelta::days(31));
    let recent = app.create_org("bob").await.id;
    let retained = |events: Vec<crate::event_helpers::StoredEvent>| {
        events.iter().any(|e| e.id.to_string() == first)
    };
    for _ in 0..100 {
        if !retained(app.events_of(&old).await) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!retained(app.events_of(&old).await), "dropped");
    assert_eq!(app.events_of(&recent).await.len(), 1, "kept");
    let refused = app
        .events()
        .watch_billing_events(request(
            As::Ops,
            proto::WatchBillingEventsRequest {
                from_event_id: first,
                ..Default::default()
            },
        ))
        .await;
    expect_code(refused, Code::FailedPrecondition);
}
