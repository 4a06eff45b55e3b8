//! The background loops, each until its stop signal turns true:
//! - the **inbox** worker applies stored Stripe events one claim at a time;
//! - the **operations** loop resumes billing operations whose performer
//!   died or could not reach Stripe, and starts queued upkeeps;
//! - the **maintenance** loop writes off expired credit and renews add-on
//!   instances whose period is up.
//!
//! Every replica runs all three. Claims (`SKIP LOCKED`, leases) and row
//! locks make them share the work without doing anything twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::domain::retry::RetryPolicy;
use crate::service::{Service, WorkerStep};

/// How the inbox is worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxSettings {
    pub retry: RetryPolicy,
    /// The longest the worker sleeps when the inbox looks empty.
    pub poll_interval: Duration,
    /// How often Stripe's Events API is listed for events never delivered
    /// (and once at start).
    pub catch_up_interval: Duration,
    /// How often every subscription is compared with Stripe and repaired.
    pub reconcile_interval: Duration,
    /// Workers applying events side by side in this replica.
    pub concurrency: usize,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: 8,
                first_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(3600),
            },
            poll_interval: Duration::from_secs(2),
            catch_up_interval: Duration::from_secs(300),
            reconcile_interval: Duration::from_secs(3600),
            concurrency: 4,
        }
    }
}

/// Works the inbox: sleeps until the ingress stores something or the poll
/// interval passes; the poll also picks up retries whose backoff has run
/// out and events stored by other replicas.
pub async fn run_inbox_worker(
    service: Service,
    settings: InboxSettings,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let idle = match service.apply_next_stripe_event(settings.retry).await {
            Ok(WorkerStep::Idle) => true,
            Ok(WorkerStep::Finished { event_id, outcome }) => {
                tracing::info!(%event_id, ?outcome, "Stripe event applied");
                false
            }
            // Already logged with its cause; move on to the next event.
            Ok(WorkerStep::Failed { .. }) => false,
            // Stripe asked us to slow down: pause, as if idle.
            Ok(WorkerStep::Throttled { .. }) => true,
            Err(error) => {
                // The inbox itself is unreachable (database down): wait.
                tracing::error!(error = %error, "the webhook inbox could not be read");
                true
            }
        };
        if idle {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Catches up with Stripe's Events API at start and then every `interval`,
/// waking the inbox worker when events were found.
pub async fn run_stripe_catch_up(
    service: Service,
    interval: Duration,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        match service.catch_up_stripe_events().await {
            Ok(report) if report.stored > 0 => wake.notify_one(),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %error, "catching up with Stripe's events failed; the next run tries again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Reconciles with Stripe every `interval` (the first pass one interval
/// after start; catch-up covers the start).
pub async fn run_stripe_reconciliation(
    service: Service,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = chrono::TimeDelta::from_std(interval).unwrap_or(chrono::TimeDelta::hours(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        if let Err(error) = service.reconcile_stripe_if_due(every).await {
            tracing::warn!(error = %error, "reconciling with Stripe failed; the next pass tries again");
        }
    }
}

/// Resumes lapsed and queued billing operations, one at a time, sleeping
/// `interval` whenever there is none.
pub async fn run_operations(service: Service, interval: Duration, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let idle = match service.resume_next_operation().await {
            Ok(found) => !found,
            Err(error) => {
                tracing::error!(error = %error, "billing operations could not be read");
                true
            }
        };
        if idle {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

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

/// Organizations handled per maintenance pass; the rest wait for the next.
const MAINTENANCE_BATCH: i64 = 500;

/// Writes off expired credit and renews due add-on instances, every
/// interval. Each organization is handled in its own transaction under its
/// row lock, so replicas serialize per organization and a renewal is never
/// charged twice (the second sees the new period).
pub async fn run_maintenance(
    service: Service,
    settings: MaintenanceSettings,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        if let Err(error) = service.expire_credits(MAINTENANCE_BATCH).await {
            tracing::error!(error = %error, "writing off expired credit failed");
        }
        if let Err(error) = service.release_expired_holds(MAINTENANCE_BATCH).await {
            tracing::error!(error = %error, "releasing expired credit holds failed");
        }
        if let Err(error) = service.renew_instances(MAINTENANCE_BATCH).await {
            tracing::error!(error = %error, "renewing add-on instances failed");
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            _ = stop.changed() => {}
        }
    }
}
