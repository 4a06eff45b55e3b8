//! Signed webhooks out: signatures a Standard Webhooks receiver verifies
//! (rotation included), retries under the same webhook-id, per-organization
//! order while retrying, pausing and resuming, replays, and the refusal of
//! private targets.

use std::collections::HashSet;
use std::time::Duration;

use billing_service::grpc::proto::{self, Role, WebhookDeliveryState, WebhookEndpointState};
use tonic::Code;

use crate::event_receiver::{EventReceiver, Received};
use crate::helpers::{
    As, TestOptions, expect_code, request, spawn_app, spawn_app_with, test_webhook_settings,
};
use crate::metrics::{scrape, value};

fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.webhook_id.clone()).collect()
}

#[tokio::test]
async fn a_receiver_verifies_every_delivery_with_the_specs_algorithm_across_a_rotation() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &[]).await;
    let first_secret = endpoint.secret.clone();
    assert!(first_secret.starts_with("whsec_"));
    receiver.trust(&[&first_secret]);

    let org = app.create_org("alice").await.id;
    let got = receiver.wait_for_accepted(1).await;
    let created = &got[0];
    assert_eq!(created.verified_by, vec![0], "signed with the secret");
    let stored = app.events_of(&org).await;
    assert_eq!(created.webhook_id, stored[0].id.to_string());
    assert_eq!(created.body["id"], stored[0].id.to_string());
    assert_eq!(created.body["type"], "organization.created");
    assert_eq!(created.body["orgId"], org);
    assert_eq!(
        created.body["stateVersion"],
        stored[0].state_version.to_string()
    );
    assert_eq!(created.body["organizationCreated"]["name"], "alice's team");
    let sent_at: i64 = created.timestamp.parse().expect("seconds");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);

    // Rotated: both secrets sign while the old one is kept (an hour here),
    // so a receiver still on the old one verifies too.
    let rotated = app.rotate_secret(&endpoint.id, Some(3600), "").await;
    let second_secret = rotated.secret.clone();
    assert_ne!(second_secret, first_secret);
    assert!(rotated.previous_secret_expires_at.is_some());
    receiver.trust(&[&first_secret, &second_secret]);
    app.invite(As::User("alice"), &org, "bob@example.com", Role::Member)
        .await
        .expect("invite");
    let got = receiver.wait_for_accepted(2).await;
    assert_eq!(got[1].event_type(), "member.invited");
    assert_eq!(got[1].verified_by, vec![0, 1], "{}", got[1].signature);
    assert_eq!(got[1].signature.split(' ').count(), 2);

    // Rotated again with the old one retired at once: only the newest signs.
    let third_secret = app.rotate_secret(&endpoint.id, Some(0), "").await.secret;
    receiver.trust(&[&first_secret, &second_secret, &third_secret]);
    app.invite(As::User("alice"), &org, "carol@example.com", Role::Member)
        .await
        .expect("invite");
    let got = receiver.wait_for_accepted(3).await;
    assert_eq!(got[2].verified_by, vec![2]);
    // The secret is shown at creation and rotation only.
    assert!(app.endpoint(&endpoint.id).await.secret.is_empty());
}

#[tokio::test]
async fn a_receiver_failing_three_times_then_succeeding_gets_the_event_under_one_webhook_id() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &[]).await;
    receiver.fail_next(3);
    let org = app.create_org("alice").await.id;
    let got = receiver.wait_for_accepted(1).await;
    let all = receiver.received();
    assert_eq!(all.len(), 4, "three failures and the success");
    let event_id = app.events_of(&org).await[0].id.to_string();
    assert!(
        all.iter().all(|r| r.webhook_id == event_id),
        "{:?}",
        ids(&all)
    );
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 500, 200]
    );
    assert_eq!(got[0].body, all[0].body, "the same event each time");

    // The outcome is written once the receiver's answer is in.
    let mut deliveries = app.deliveries(&endpoint.id, &event_id).await;
    for _ in 0..100 {
        if deliveries[0].state() == WebhookDeliveryState::Delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        deliveries = app.deliveries(&endpoint.id, &event_id).await;
    }
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.state(), WebhookDeliveryState::Delivered);
    let statuses: Vec<(u32, &str)> = delivery
        .attempts
        .iter()
        .map(|a| (a.http_status, a.error.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (500, "HTTP 500"),
            (500, "HTTP 500"),
            (500, "HTTP 500"),
            (200, "")
        ]
    );
}

#[tokio::test]
async fn each_organizations_order_holds_while_its_deliveries_are_retried() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    app.create_endpoint(&receiver.url, &[]).await;
    // Every other delivery fails at first, across both organizations.
    receiver.fail_next(5);
    let a = app.create_org("alice").await.id;
    let b = app.create_org("bob").await.id;
    for n in 0..4 {
        for (org, owner) in [(&a, "alice"), (&b, "bob")] {
            app.invite(
                As::User(owner),
                org,
                &format!("user{n}@example.com"),
                Role::Member,
            )
            .await
            .expect("invite");
        }
    }
    let expected = app.all_events().await.len();
    let accepted = receiver.wait_for_accepted(expected).await;
    for org in [&a, &b] {
        let committed: Vec<String> = app
            .events_of(org)
            .await
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        let delivered: Vec<String> = accepted
            .iter()
            .filter(|r| r.org_id() == org.as_str())
            .map(|r| r.webhook_id.clone())
            .collect();
        assert_eq!(delivered, committed, "in commit order, each once");
        // Nothing of the organization was ever sent ahead of an earlier
        // event that had not been accepted yet.
        let attempts: Vec<String> = receiver
            .received()
            .iter()
            .filter(|r| r.org_id() == org.as_str())
            .map(|r| r.webhook_id.clone())
            .collect();
        let mut first_seen = Vec::new();
        for id in attempts {
            if first_seen.last() != Some(&id) {
                assert!(
                    !first_seen.contains(&id),
                    "{id} sent again after a later event"
                );
                first_seen.push(id);
            }
        }
        assert_eq!(first_seen, committed);
    }
}

#[tokio::test]
async fn an_endpoint_failing_past_the_threshold_is_paused_and_resumes_where_it_stopped() {
    let app = spawn_app_with(TestOptions {
        webhooks: billing_service::service::WebhookSettings {
            pause_after: Duration::from_millis(300),
            ..test_webhook_settings()
        },
        ..TestOptions::default()
    })
    .await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &[]).await;
    receiver.always_answer(Some(503));
    let org = app.create_org("alice").await.id;

    let mut paused = app.endpoint(&endpoint.id).await;
    for _ in 0..100 {
        if paused.state() == WebhookEndpointState::Paused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        paused = app.endpoint(&endpoint.id).await;
    }
    assert_eq!(paused.state(), WebhookEndpointState::Paused);
    assert!(
        paused.paused_reason.contains("HTTP 503"),
        "{}",
        paused.paused_reason
    );
    assert!(paused.failing_since.is_some());
    let announced: Vec<_> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "webhook_endpoint.paused")
        .collect();
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].org_id, None);
    assert_eq!(announced[0].data["endpointId"], endpoint.id);
    assert_eq!(announced[0].data["lastError"], "HTTP 503");
    // Only the origin: other endpoints see this event, and a path may be a
    // receiver's token.
    let origin = receiver.url.trim_end_matches("/hooks/billing");
    assert_eq!(announced[0].data["origin"], origin);
    let metrics = scrape(&app).await;
    assert_eq!(
        value(&metrics, "billing_webhook_endpoint_pauses_total", &[]),
        1.0
    );

    // Paused: nothing more is sent, while events keep queueing.
    let attempts = receiver.received().len();
    app.invite(As::User("alice"), &org, "bob@example.com", Role::Member)
        .await
        .expect("invite");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        attempts,
        "no attempt while paused"
    );

    receiver.always_answer(None);
    let resumed = app
        .events()
        .resume_webhook_endpoint(request(
            As::Ops,
            proto::ResumeWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(resumed.state(), WebhookEndpointState::Active);
    assert!(resumed.failing_since.is_none());
    // The organization's events in order; and the endpoint learns that it
    // was paused (events without an organization have a lane of their own).
    let got = receiver.wait_for_accepted(3).await;
    let of_org: Vec<&str> = got
        .iter()
        .filter(|r| r.org_id() == org)
        .map(Received::event_type)
        .collect();
    assert_eq!(of_org, ["organization.created", "member.invited"]);
    let own: Vec<&Received> = got.iter().filter(|r| r.org_id().is_empty()).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].event_type(), "webhook_endpoint.paused");
}

#[tokio::test]
async fn a_private_range_endpoint_is_refused_by_default() {
    let app = spawn_app_with(TestOptions {
        webhooks: billing_service::service::WebhookSettings::default(),
        ..TestOptions::default()
    })
    .await;
    for url in [
        "http://127.0.0.1:9000/hooks",
        "http://10.0.0.7/hooks",
        "http://192.168.1.20/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://localhost:3000/hooks",
        // 127.0.0.1 written as resolvers also read it.
        "http://2130706433/hooks",
        "http://127.1/hooks",
    ] {
        let refused = app
            .events()
            .create_webhook_endpoint(request(
                As::Ops,
                proto::CreateWebhookEndpointRequest {
                    url: url.to_owned(),
                    ..Default::default()
                },
            ))
            .await;
        let status = expect_code(refused, Code::InvalidArgument);
        assert!(status.message().starts_with("url: "), "{url}: {status:?}");
    }
    // A public address is accepted (nothing is sent until there is an event).
    app.create_endpoint("https://hooks.example.com/billing", &["member.joined"])
        .await;
    // Only operators configure endpoints.
    let bff = app
        .events()
        .list_webhook_endpoints(request(
            As::User("alice"),
            proto::ListWebhookEndpointsRequest {},
        ))
        .await;
    expect_code(bff, Code::PermissionDenied);
}

#[tokio::test]
async fn an_endpoint_receives_only_the_types_it_asks_for_and_replays_resend_a_range() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app
        .create_endpoint(&receiver.url, &["member.invited", "member.joined"])
        .await;
    let org = app.create_org("alice").await.id;
    let invitation = app
        .invite(As::User("alice"), &org, "bob@example.com", Role::Member)
        .await
        .expect("invite");
    app.accept(&invitation.id, "bob").await.expect("accept");
    let got = receiver.wait_for_accepted(2).await;
    let types: Vec<&str> = got.iter().map(Received::event_type).collect();
    assert_eq!(types, ["member.invited", "member.joined"]);

    // Replayed from the organization's first event on: the filter still
    // applies, the ids are the events' own.
    let events = app.events_of(&org).await;
    let replayed = app
        .events()
        .replay_webhook_events(request(
            As::Ops,
            proto::ReplayWebhookEventsRequest {
                endpoint_id: endpoint.id.clone(),
                from_event_id: events[0].id.to_string(),
                to_event_id: String::new(),
            },
        ))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replayed.queued, 2);
    let got = receiver.wait_for_accepted(4).await;
    assert_eq!(
        ids(&got[2..]),
        ids(&got[..2]),
        "the same ids again, in order"
    );
    let deliveries = app.deliveries(&endpoint.id, "").await;
    assert_eq!(deliveries.len(), 4);
    assert_eq!(
        deliveries.iter().map(|d| d.replay).collect::<Vec<_>>(),
        [true, true, false, false],
        "newest first"
    );

    let unknown = app
        .events()
        .replay_webhook_events(request(
            As::Ops,
            proto::ReplayWebhookEventsRequest {
                endpoint_id: endpoint.id.clone(),
                from_event_id: uuid::Uuid::now_v7().to_string(),
                to_event_id: String::new(),
            },
        ))
        .await;
    expect_code(unknown, Code::FailedPrecondition);
}

#[tokio::test]
async fn two_replicas_share_the_deliveries_and_send_each_event_once() {
    let app = spawn_app().await;
    let replica = app.spawn_replica().await;
    let receiver = EventReceiver::start().await;
    app.create_endpoint(&receiver.url, &[]).await;
    for n in 0..12 {
        let on = if n % 2 == 0 { &app } else { &replica };
        on.create_org(&format!("owner-{n}")).await;
    }
    let events = app.all_events().await;
    let got = receiver.wait_for_accepted(events.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = receiver.received();
    assert_eq!(all.len(), events.len(), "no event was sent twice");
    let unique: HashSet<String> = ids(&got).into_iter().collect();
    let expected: HashSet<String> = events.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn an_endpoints_cap_on_deliveries_in_flight_holds_across_replicas() {
    // Attempts may wait long enough for the receiver to hold them.
    let app = spawn_app_with(TestOptions {
        webhooks: billing_service::service::WebhookSettings {
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(20),
            ..test_webhook_settings()
        },
        ..TestOptions::default()
    })
    .await;
    let replica = app.spawn_replica().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app
        .events()
        .create_webhook_endpoint(request(
            As::Ops,
            proto::CreateWebhookEndpointRequest {
                url: receiver.url.clone(),
                max_in_flight: Some(2),
                ..Default::default()
            },
        ))
        .await
        .expect("endpoint")
        .into_inner();
    assert_eq!(endpoint.max_in_flight, 2);
    receiver.hold(true);
    for n in 0..6 {
        let on = if n % 2 == 0 { &app } else { &replica };
        on.create_org(&format!("owner-{n}")).await;
    }
    // Six organizations' events are due, on two replicas: two at a time.
    receiver.wait_for_held().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.held().len(), 2, "{:?}", receiver.held());
    receiver.release_all();
    receiver.wait_for_accepted(6).await;
    assert_eq!(receiver.accepted().len(), 6);
}
