//! A replica killed (SIGKILL) in the middle of a webhook delivery loses no
//! event: once its claim lapses, the replica that takes the lane over sends
//! the delivery in flight again, under the same webhook-id, and then the
//! rest in order.

use std::time::Duration;

use billing_service::grpc::proto::Role;
use billing_service::service::WebhookSettings;

use crate::event_receiver::EventReceiver;
use crate::helpers::{As, TestOptions, spawn_app_with, test_webhook_settings};
use crate::service_process::ServiceProcess;
use crate::stripe_server::FakeStripe;

#[tokio::test]
async fn kill_9_mid_delivery_loses_no_event_and_the_resend_carries_the_same_id() {
    // The in-process app only writes; the binary delivers.
    let app = spawn_app_with(TestOptions {
        webhooks: WebhookSettings {
            concurrency: 0,
            ..test_webhook_settings()
        },
        ..TestOptions::default()
    })
    .await;
    let stripe = FakeStripe::start().await;
    let receiver = EventReceiver::start().await;
    let endpoint = app.create_endpoint(&receiver.url, &[]).await;
    receiver.trust(&[&endpoint.secret]);
    receiver.hold(true);
    let org = app.create_org("alice").await.id;
    for email in ["bob@example.com", "carol@example.com"] {
        app.invite(As::User("alice"), &org, email, Role::Member)
            .await
            .expect("invite");
    }
    let committed: Vec<String> = app
        .events_of(&org)
        .await
        .iter()
        .map(|e| e.id.to_string())
        .collect();

    let mut replica = ServiceProcess::new(&app, &stripe)
        .with("BILLING_WEBHOOKS_ALLOW_PRIVATE", "true")
        .with("BILLING_WEBHOOKS_TIMEOUT_MS", "1000")
        .with("BILLING_WEBHOOKS_LEASE_MS", "1500")
        .with("BILLING_WEBHOOKS_POLL_MS", "50")
        .with("BILLING_WEBHOOKS_RETRY_DELAYS_MS", "50,100");
    replica.start().await;
    let in_flight = tokio::time::timeout(Duration::from_secs(20), receiver.wait_for_held())
        .await
        .expect("a delivery arrives");
    assert_eq!(
        in_flight, committed[0],
        "the organization's first event goes first"
    );
    replica.kill();
    // The dead process's request is answered; nobody reads the answer.
    receiver.release_all();

    replica.start().await;
    receiver
        .wait_until("every event accepted", |all| {
            committed
                .iter()
                .all(|id| all.iter().any(|r| &r.webhook_id == id && r.status == 200))
        })
        .await;
    let accepted = receiver.accepted();
    let sent: Vec<&str> = accepted.iter().map(|r| r.webhook_id.as_str()).collect();
    // The first event twice (the killed attempt, then its resend), under
    // one id; then the rest, once each, in order.
    assert_eq!(
        sent,
        [
            committed[0].as_str(),
            committed[0].as_str(),
            committed[1].as_str(),
            committed[2].as_str()
        ]
    );
    assert_eq!(accepted[0].body, accepted[1].body);
    assert!(
        accepted.iter().all(|r| r.verified_by == [0]),
        "every one signed"
    );
}
