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
    // The first event at least twice (the killed attempt, then its resend),
    // the same body under one id each time; then the rest, once, in order.
    let mut first_seen: Vec<&str> = Vec::new();
    for r in &accepted {
        if !first_seen.contains(&r.webhook_id.as_str()) {
            first_seen.push(&r.webhook_id);
        }
    }
    assert_eq!(
        first_seen,
        committed.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let resent: Vec<_> = accepted
        .iter()
        .filter(|r| r.webhook_id == committed[0])
        .collect();
    assert!(resent.len() >= 2, "{resent:#?}");
    assert!(resent.iter().all(|r| r.body == resent[0].body));
    for id in &committed[1..] {
        let sent = accepted.iter().filter(|r| &r.webhook_id == id).count();
        assert_eq!(sent, 1, "{id} once");
    }
    assert!(
        accepted.iter().all(|r| r.verified_by == [0]),
        "every one signed"
    );
}
