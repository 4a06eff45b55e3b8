//! The background loops, each until its stop signal turns true:
//! - the **inbox** worker applies stored Stripe events one claim at a time;
//! - the **operations** loop resumes billing operations whose performer
//!   died or could not reach Stripe, and starts queued upkeeps;
//! - the **maintenance** loop writes off expired credit, renews add-on
//!   instances whose period is up, announces trial stages from the clock,
//!   and drops lifecycle events past their retention;
//! - the **webhook dispatcher** delivers lifecycle events to the
//!   operators' endpoints.
//!
//! Every replica runs them all. Claims (`SKIP LOCKED`, leases) and row
//! locks make them share the work without doing anything twice.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgListener;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::domain::retry::RetryPolicy;
use crate::service::{Service, WebhookSettings, WorkerStep};

/// Every background loop of a replica, running until the stop signal.
#[derive(Debug)]
pub struct BackgroundLoops {
    loops: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl BackgroundLoops {
    /// Starts the loops. `listening` is the connection that has listened
    /// for entitlement changes since before the cache was loaded.
    pub fn start(
        service: &Service,
        inbox: InboxSettings,
        maintenance: MaintenanceSettings,
        stored_events: Arc<Notify>,
        listening: PgListener,
        stopped: &watch::Receiver<bool>,
    ) -> Self {
        let mut loops = Self { loops: Vec::new() };
        // The loops that work with Stripe. Without Stripe there is nothing
        // to re-read events from or resume operations with; events and
        // operations wait until a key is configured. Several inbox workers
        // claim side by side (SKIP LOCKED); sync tickets keep an older
        // reading from being stored over a newer one, whichever finishes last.
        if service.stripe_configured() {
            for _ in 0..inbox.concurrency.max(1) {
                let worker = run_inbox_worker(
                    service.clone(),
                    inbox,
                    stored_events.clone(),
                    stopped.clone(),
                );
                loops.spawn("an inbox worker", worker);
            }
            let catch_up = run_stripe_catch_up(
                service.clone(),
                inbox.catch_up_interval,
                stored_events,
                stopped.clone(),
            );
            loops.spawn("the Stripe catch-up loop", catch_up);
            let reconciliation = run_stripe_reconciliation(
                service.clone(),
                inbox.reconcile_interval,
                stopped.clone(),
            );
            loops.spawn("the Stripe reconciliation loop", reconciliation);
            let operations = run_operations(service.clone(), inbox.poll_interval, stopped.clone());
            loops.spawn("the operations loop", operations);
        }
        let changes = {
            let service = service.clone();
            let stopped = stopped.clone();
            async move { service.follow_entitlement_changes(listening, stopped).await }
        };
        loops.spawn("the entitlement change listener", changes);
        let maintenance = run_maintenance(service.clone(), maintenance, stopped.clone());
        loops.spawn("the maintenance loop", maintenance);
        // A replica set to send no webhooks leaves them to the others.
        let webhooks = service.webhook_settings().clone();
        if webhooks.concurrency > 0 {
            let dispatcher = run_webhook_dispatcher(service.clone(), webhooks, stopped.clone());
            loops.spawn("the webhook dispatcher", dispatcher);
        }
        loops
    }

    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.loops.push((name, tokio::spawn(task)));
    }

    /// Waits until every loop has stopped.
    pub async fn join(self) -> anyhow::Result<()> {
        for (name, handle) in self.loops {
            handle.await.with_context(|| format!("{name} panicked"))?;
        }
        Ok(())
    }
}

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
    /// How long lifecycle events are kept.
    pub event_retention: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            event_retention: Duration::from_secs(30 * 86_400),
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
        if let Err(error) = service.announce_trial_stages(MAINTENANCE_BATCH).await {
            tracing::error!(error = %error, "announcing trial stages failed");
        }
        if let Err(error) = service.recheck_over_seats(MAINTENANCE_BATCH).await {
            tracing::error!(error = %error, "looking again at organizations over their seats failed");
        }
        if let Err(error) = service
            .purge_old_events(settings.event_retention, MAINTENANCE_BATCH * 10)
            .await
        {
            tracing::error!(error = %error, "dropping lifecycle events past their retention failed");
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Delivers webhooks: claims due lanes while this replica has room (each
/// lane one endpoint's deliveries of one organization, sent in order on a
/// task of its own), then sleeps until a commit is announced, a lane is
/// done, or the poll interval passes (retries and other replicas' work).
/// At the stop signal it claims no more and lets each lane finish the
/// delivery in flight.
pub async fn run_webhook_dispatcher(
    service: Service,
    settings: WebhookSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut lanes = JoinSet::new();
    let mut commits = service.cache().watermark_changes();
    while !*stop.borrow() {
        commits.borrow_and_update();
        // Lanes that finished give their room back.
        while lanes.try_join_next().is_some() {}
        let free = settings.concurrency.saturating_sub(lanes.len());
        let claimed = if free == 0 {
            Vec::new()
        } else {
            service
                .claim_webhook_lanes(free)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(error = %error, "webhook deliveries could not be claimed");
                    Vec::new()
                })
        };
        let claimed_any = !claimed.is_empty();
        // At most `free` were claimed, so this stays within the concurrency.
        for lane in claimed {
            let service = service.clone();
            let stop = stop.clone();
            lanes.spawn(async move {
                if let Err(error) = service.work_webhook_lane(lane, &stop).await {
                    tracing::warn!(error = %error, endpoint = %lane.endpoint_id, "a webhook lane stopped; its lease hands it on");
                }
            });
        }
        if claimed_any && lanes.len() < settings.concurrency {
            continue;
        }
        tokio::select! {
            _ = commits.changed() => {}
            Some(_) = lanes.join_next(), if !lanes.is_empty() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
    while lanes.join_next().await.is_some() {}
}
