//! Stopping a replica as Kubernetes does (SIGTERM): open watch streams end
//! with UNAVAILABLE at once, so gateways reconnect elsewhere and the drain
//! is not held open, and the process exits within its grace period. A
//! closed terminal (SIGHUP) stops it the same way.

use std::time::Duration;

use billing_service::grpc::proto::entitlement_service_client::EntitlementServiceClient;
use billing_service::grpc::proto::entitlement_update::Update;
use billing_service::grpc::proto::{self};
use tonic::Code;

use crate::helpers::{As, request, spawn_app_with_stripe};
use crate::service_process::ServiceProcess;

#[tokio::test]
async fn sigterm_ends_an_open_watch_with_unavailable_and_exits_within_the_grace_period() {
    let (app, stripe) = spawn_app_with_stripe().await;
    app.create_org("owner-1").await;
    let mut replica = ServiceProcess::new(&app, &stripe).with("BILLING_SHUTDOWN_GRACE_MS", "3000");
    let channel = replica.start().await;
    let mut watch = EntitlementServiceClient::new(channel)
        .watch_entitlements(request(
            As::Gateway,
            proto::WatchEntitlementsRequest::default(),
        ))
        .await
        .expect("watch")
        .into_inner();
    loop {
        let update = watch.message().await.expect("an update").expect("open");
        if let Some(Update::SnapshotComplete(true)) = update.update {
            break;
        }
    }
    // Read on while the replica stops; nothing else would end the stream.
    let ended = tokio::spawn(async move {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    });

    // Far more than the grace period, so a slow machine cannot fail it; an
    // open stream held the drain for good before.
    let status = replica
        .terminate(Duration::from_secs(30))
        .await
        .expect("the process exits with a watch open");
    assert!(status.success(), "{status}");
    let error = ended
        .await
        .expect("the reader")
        .expect_err("the stream ends with a status");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("shutting down"), "{error:?}");
}

/// A closed terminal (SIGHUP) stops the service as Ctrl-C does, so the
/// private development PostgreSQL is stopped with it, not left running.
#[tokio::test]
async fn sighup_stops_the_service_gracefully() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let mut replica = ServiceProcess::new(&app, &stripe);
    replica.start().await;
    let status = replica
        .signal("HUP", Duration::from_secs(30))
        .await
        .expect("the process exits on SIGHUP");
    assert!(status.success(), "{status}");
}
