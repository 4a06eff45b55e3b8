//! The maintenance loop: writes off expired credit and renews add-on
//! instances whose period is up, every interval, on every replica. Each
//! organization is handled in its own transaction under its row lock, so
//! replicas running the loop at once serialize per organization and a
//! renewal is never charged twice (the second sees the new period).

use std::time::Duration;

use tokio::sync::watch;

use crate::service::Service;

/// Organizations handled per pass; the rest wait for the next pass.
const BATCH: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceSettings {
    pub interval: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
        }
    }
}

/// Runs until `stop` turns true.
pub async fn run_maintenance(
    service: Service,
    settings: MaintenanceSettings,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        if let Err(error) = service.expire_credits(BATCH).await {
            tracing::error!(error = %error, "writing off expired credit failed");
        }
        if let Err(error) = service.renew_instances(BATCH).await {
            tracing::error!(error = %error, "renewing add-on instances failed");
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            _ = stop.changed() => {}
        }
    }
}
