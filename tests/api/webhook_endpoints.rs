//! Operators configuring webhook endpoints: updates, pausing by hand,
//! deleting, bad input, and retried calls that must act once.

use std::time::Duration;

use billing_service::grpc::proto::{self, WebhookEndpointState};
use tonic::Code;

use crate::event_receiver::EventReceiver;
use crate::helpers::{As, TestApp, expect_code, request, spawn_app};

async fn create(
    app: &TestApp,
    url: &str,
    max_in_flight: u32,
    key: &str,
) -> Result<proto::WebhookEndpoint, tonic::Status> {
    app.events()
        .create_webhook_endpoint(request(
            As::Ops,
            proto::CreateWebhookEndpointRequest {
                url: url.to_owned(),
                max_in_flight: Some(max_in_flight),
                idempotency_key: key.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_retried_creation_answers_the_first_endpoint_and_a_reused_key_is_refused() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let first = create(&app, &receiver.url, 4, "hooks-1")
        .await
        .expect("create");
    // The answer was lost; the retry gets the same endpoint and secret.
    let retried = create(&app, &receiver.url, 4, "hooks-1")
        .await
        .expect("retry");
    assert_eq!(retried.id, first.id);
    assert_eq!(retried.secret, first.secret);
    assert!(retried.secret.starts_with("whsec_"));
    assert_eq!(app.endpoints().await.len(), 1, "no second endpoint");

    // The same key for other settings is another request.
    let reused = create(&app, &receiver.url, 8, "hooks-1").await;
    let status = expect_code(reused, Code::AlreadyExists);
    assert!(status.message().contains("idempotency_key"), "{status:?}");
    // Without a key every call is new.
    create(&app, &receiver.url, 4, "").await.expect("unkeyed");
    create(&app, &receiver.url, 4, "").await.expect("unkeyed");
    assert_eq!(app.endpoints().await.len(), 3);
    let long = create(&app, &receiver.url, 4, &"k".repeat(129)).await;
    let status = expect_code(long, Code::InvalidArgument);
    assert!(
        status.message().starts_with("idempotency_key"),
        "{status:?}"
    );

    // Three endpoints, all at this receiver: an event arrives once per
    // endpoint (the retried creation made none of its own).
    app.create_org("alice").await;
    let got = receiver.wait_for_accepted(3).await;
    assert_eq!(got.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.accepted().len(), 3, "one delivery per endpoint");
}

#[tokio::test]
async fn a_retried_rotation_keeps_the_secret_receivers_still_use() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &[]).await;
    let original = endpoint.secret.clone();

    let rotated = app
        .rotate_secret(&endpoint.id, Some(3600), "rotate-1")
        .await;
    assert_ne!(rotated.secret, original);
    // The answer was lost and the call retried: the same rotation is
    // answered, and the original secret still signs beside the new one.
    let retried = app
        .rotate_secret(&endpoint.id, Some(3600), "rotate-1")
        .await;
    assert_eq!(retried.secret, rotated.secret);
    assert_eq!(
        retried.previous_secret_expires_at,
        rotated.previous_secret_expires_at
    );
    receiver.trust(&[&original, &rotated.secret]);
    app.create_org("alice").await;
    let got = receiver.wait_for_accepted(1).await;
    assert_eq!(got[0].verified_by, vec![0, 1], "{}", got[0].signature);

    // A new key is a new rotation: the secret of rotate-1 becomes the
    // previous one, and the original no longer signs.
    let next = app
        .rotate_secret(&endpoint.id, Some(3600), "rotate-2")
        .await;
    assert_ne!(next.secret, rotated.secret);
    receiver.trust(&[&original, &rotated.secret, &next.secret]);
    app.create_org("bob").await;
    let got = receiver.wait_for_accepted(2).await;
    assert_eq!(got[1].verified_by, vec![1, 2], "{}", got[1].signature);
}

#[tokio::test]
async fn operators_update_pause_and_delete_endpoints_and_bad_input_is_refused() {
    let app = spawn_app().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &["member.joined"]).await;
    let update = |changes: proto::UpdateWebhookEndpointRequest| {
        let app = &app;
        async move {
            app.events()
                .update_webhook_endpoint(request(As::Ops, changes))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // Every type from now on, and a description; the URL stays.
    let updated = update(proto::UpdateWebhookEndpointRequest {
        endpoint_id: endpoint.id.clone(),
        description: Some("billing mails".into()),
        replace_event_types: true,
        max_in_flight: Some(8),
        ..Default::default()
    })
    .await
    .expect("update");
    assert!(updated.event_types.is_empty());
    assert_eq!(updated.description, "billing mails");
    assert_eq!(updated.max_in_flight, 8);
    assert_eq!(updated.url, receiver.url);
    assert!(
        updated.secret.is_empty(),
        "no secret outside creation and rotation"
    );

    for (bad, field) in [
        (
            proto::UpdateWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
                url: Some("ftp://example.com/".into()),
                ..Default::default()
            },
            "url",
        ),
        (
            proto::UpdateWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
                event_types: vec!["member.joined".into()],
                ..Default::default()
            },
            "event_types",
        ),
        (
            proto::UpdateWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
                max_in_flight: Some(65),
                ..Default::default()
            },
            "max_in_flight",
        ),
        (
            proto::UpdateWebhookEndpointRequest {
                endpoint_id: "not-a-uuid".into(),
                ..Default::default()
            },
            "endpoint_id",
        ),
    ] {
        let status = expect_code(update(bad).await, Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
    let unknown = update(proto::UpdateWebhookEndpointRequest {
        endpoint_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    })
    .await;
    expect_code(unknown, Code::NotFound);

    // Paused by hand: events queue, nothing is sent until it resumes.
    let paused = app
        .events()
        .pause_webhook_endpoint(request(
            As::Ops,
            proto::PauseWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(paused.state(), WebhookEndpointState::Paused);
    assert_eq!(paused.paused_reason, "paused by an operator");
    app.create_org("alice").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
    app.events()
        .resume_webhook_endpoint(request(
            As::Ops,
            proto::ResumeWebhookEndpointRequest {
                endpoint_id: endpoint.id.clone(),
            },
        ))
        .await
        .expect("resume");
    let got = receiver.wait_for_accepted(1).await;
    assert_eq!(got[0].event_type(), "organization.created");

    // Deleted: gone from the list, and a second delete finds nothing.
    let delete = || {
        let mut events = app.events();
        let endpoint_id = endpoint.id.clone();
        async move {
            events
                .delete_webhook_endpoint(request(
                    As::Ops,
                    proto::DeleteWebhookEndpointRequest { endpoint_id },
                ))
                .await
        }
    };
    delete().await.expect("delete");
    expect_code(delete().await, Code::NotFound);
    assert!(app.endpoints().await.is_empty());
}
