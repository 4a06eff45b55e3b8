//! The container image's HEALTHCHECK: `billing-service --probe` exits 0
//! while the local service is SERVING and 1 when nothing answers.

use std::process::Command;
use std::time::Duration;

use crate::helpers::spawn_app_with_stripe;
use crate::service_process::ServiceProcess;

fn probe(port: u16) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_billing-service"))
        .arg("--probe")
        .env("BILLING_GRPC_ADDR", format!("0.0.0.0:{port}"))
        .output()
        .expect("the probe runs")
        .status
}

#[tokio::test]
async fn the_probe_passes_while_the_service_serves_and_fails_once_it_stopped() {
    let (app, stripe) = spawn_app_with_stripe().await;
    let mut replica = ServiceProcess::new(&app, &stripe);
    replica.start().await;
    let port = replica.grpc_port;
    let serving = tokio::task::spawn_blocking(move || probe(port))
        .await
        .expect("probe");
    assert!(serving.success(), "{serving}");

    replica
        .terminate(Duration::from_secs(30))
        .await
        .expect("exits");
    let stopped = tokio::task::spawn_blocking(move || probe(port))
        .await
        .expect("probe");
    assert_eq!(stopped.code(), Some(1), "{stopped}");
}
