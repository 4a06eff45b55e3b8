//! Delivering lifecycle events to webhook endpoints, at least once, in
//! order per organization and endpoint.
//!
//! Each replica claims lanes (one endpoint, one organization) with a lease
//! and works each claimed lane alone: its first pending delivery is sent
//! with no transaction open and no pooled connection held, the outcome is
//! written (a success in one statement that also checks the claim, a
//! failure in a short transaction under the lane's lock), and the next
//! follows. A failed delivery stays first in its lane until it is delivered
//! or given up (retry schedule), so later events of the organization wait
//! behind it. A replica that dies leaves its lanes to the lease; whoever
//! takes them over sends the delivery in flight again, with the same
//! `webhook-id`.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use metrics::{counter, histogram};
use tokio::sync::watch;

use super::{Service, lifecycle};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::webhooks::{AddressPolicy, Endpoint, RetrySchedule, should_pause};
use crate::error::Result;
use crate::event_codec;
use crate::instruments::{WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_DURATION, WEBHOOK_PAUSES};
use crate::outbound_webhooks::{Outgoing, SendReport};
use crate::store::webhook_deliveries::{AfterFailure, Attempt, Head, Lane};
use crate::store::{self, webhook_deliveries, webhook_endpoints};

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub policy: AddressPolicy,
    /// For one attempt, connecting included.
    pub timeout: Duration,
    pub retry: RetrySchedule,
    /// An endpoint failing this long is paused.
    pub pause_after: Duration,
    /// How long a claimed lane is left to its worker; past it another
    /// takes it over. Longer than `timeout`.
    pub lease: Duration,
    /// Lanes this replica works at once; 0 sends none (other replicas do).
    pub concurrency: usize,
    /// The longest the dispatcher sleeps when nothing woke it.
    pub poll_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::default(),
            timeout: Duration::from_secs(10),
            retry: RetrySchedule::default(),
            pause_after: Duration::from_secs(3 * 24 * 3600),
            lease: Duration::from_secs(60),
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Deliveries of a lane read at a time: sent one after another, each
/// success recorded in one statement.
const LANE_BATCH: i64 = 64;

/// What became of a lane after a failed delivery.
enum Next {
    /// The next delivery is due and the lane is still ours.
    Send,
    /// Released (nothing due, the endpoint paused) or lost (lease expired).
    Stop,
}

/// How an attempt that ended `now` went, for the record.
fn attempt_of(report: &SendReport, now: DateTime<Utc>) -> Attempt {
    Attempt {
        attempted_at: now - TimeDelta::from_std(report.elapsed).unwrap_or_default(),
        http_status: report.status.map(i32::from),
        error: report.error.clone(),
        duration_ms: i32::try_from(report.elapsed.as_millis()).unwrap_or(i32::MAX),
    }
}

impl Service {
    pub fn webhook_settings(&self) -> &WebhookSettings {
        &self.inner.settings.webhooks
    }

    fn webhooks(&self) -> &WebhookSettings {
        self.webhook_settings()
    }

    fn lease_of_lane(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + TimeDelta::from_std(self.webhooks().lease).unwrap_or(TimeDelta::MAX)
    }

    /// Claims up to `room` due lanes, endpoint by endpoint, within each
    /// endpoint's cap of deliveries in flight.
    pub async fn claim_webhook_lanes(&self, room: usize) -> Result<Vec<Lane>> {
        let now = self.now();
        let endpoints = {
            let mut conn = self.store().bookkeeping().acquire().await?;
            webhook_deliveries::due_endpoints(&mut conn, now).await?
        };
        let mut claimed = Vec::new();
        for endpoint in endpoints {
            let room = room.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            let mut tx = self.store().bookkeeping().begin().await?;
            let lanes = webhook_deliveries::claim(
                &mut tx,
                endpoint,
                self.inner.worker_id,
                now,
                self.lease_of_lane(now),
                i64::try_from(room).unwrap_or(i64::MAX),
            )
            .await?;
            tx.commit().await?;
            claimed.extend(lanes);
        }
        Ok(claimed)
    }

    /// Sends a claimed lane's due deliveries in order, until none is due,
    /// the endpoint is paused, the lease was lost, or `stop` turns true.
    /// Deliveries are read a batch at a time; each success is recorded in
    /// one statement, and a failure in a transaction of its own (it may
    /// pause the endpoint).
    pub async fn work_webhook_lane(&self, lane: Lane, stop: &watch::Receiver<bool>) -> Result<()> {
        let endpoint = {
            let mut conn = self.store().bookkeeping().acquire().await?;
            webhook_endpoints::get(&mut conn, lane.endpoint_id).await?
        };
        // Deleted meanwhile: its lanes went with it.
        let Some(endpoint) = endpoint else {
            return Ok(());
        };
        'batches: loop {
            let batch = {
                let mut conn = self.store().bookkeeping().acquire().await?;
                webhook_deliveries::pending(&mut conn, lane, LANE_BATCH).await?
            };
            if batch.is_empty() {
                return self.release_webhook_lane(lane).await;
            }
            for head in batch {
                let due = endpoint.paused.is_none()
                    && head.next_attempt_at <= self.now()
                    && !*stop.borrow();
                if !due {
                    return self.release_webhook_lane(lane).await;
                }
                let report = self.send_webhook(&endpoint, &head).await?;
                if let Some(error) = &report.error {
                    match self
                        .finish_failed_attempt(lane, &endpoint, &head, &report, error)
                        .await?
                    {
                        Next::Send => continue 'batches,
                        Next::Stop => return Ok(()),
                    }
                }
                match self.record_delivered(lane, &head, &report).await? {
                    // Taken over after our lease ran out; its new holder goes on.
                    None => return Ok(()),
                    Some(true) => {}
                    Some(false) => return self.release_webhook_lane(lane).await,
                }
            }
        }
    }

    /// Records a delivered attempt; `None` when the lane was lost, else
    /// whether the endpoint's deliveries still run.
    async fn record_delivered(
        &self,
        lane: Lane,
        head: &Head,
        report: &SendReport,
    ) -> Result<Option<bool>> {
        let now = self.now();
        let attempt = attempt_of(report, now);
        let mut conn = self.store().bookkeeping().acquire().await?;
        let recorded = webhook_deliveries::record_delivered(
            &mut conn,
            lane,
            self.inner.worker_id,
            head,
            &attempt,
            self.lease_of_lane(now),
        )
        .await?;
        if recorded.is_some() {
            counter!(WEBHOOK_DELIVERIES, "outcome" => "delivered").increment(1);
        }
        Ok(recorded)
    }

    async fn send_webhook(&self, endpoint: &Endpoint, head: &Head) -> Result<SendReport> {
        let body = Bytes::from(event_codec::to_json_body(&head.event)?);
        let message_id = head.event.id.to_string();
        let report = self
            .inner
            .webhook_sender
            .send(Outgoing {
                url: &endpoint.url,
                message_id: &message_id,
                body,
                secrets: endpoint.signing_secrets(self.now()),
            })
            .await;
        histogram!(WEBHOOK_DELIVERY_DURATION).record(report.elapsed.as_secs_f64());
        Ok(report)
    }

    /// Writes how a failed attempt went, decides what the delivery becomes
    /// (the retry schedule), pauses an endpoint that has failed too long,
    /// and says whether the lane goes on (its next delivery is due and the
    /// lane is still ours). A transaction on the durable pool: it may pause
    /// the endpoint and record that event.
    async fn finish_failed_attempt(
        &self,
        lane: Lane,
        endpoint: &Endpoint,
        head: &Head,
        report: &SendReport,
        error: &str,
    ) -> Result<Next> {
        let now = self.now();
        let attempt = attempt_of(report, now);
        let failures = u32::try_from(head.attempts).unwrap_or(0) + 1;
        let first_attempt = head.first_attempt_at.unwrap_or(attempt.attempted_at);
        let after = match self
            .webhooks()
            .retry
            .next_attempt(first_attempt, failures, now)
        {
            Some(at) => AfterFailure::RetryAt(at),
            None => AfterFailure::GivenUp,
        };
        let mut tx = self.store().begin().await?;
        let Some(active) =
            webhook_deliveries::lock_lane(&mut tx, lane, self.inner.worker_id).await?
        else {
            // Taken over after our lease ran out; its new holder sends it.
            return Ok(Next::Stop);
        };
        webhook_deliveries::record_failure(&mut tx, head, &attempt, after).await?;
        let mut paused = false;
        let failing_since =
            webhook_endpoints::note_failure(&mut tx, lane.endpoint_id, error, now).await?;
        if let Some(since) = failing_since
            && should_pause(since, now, self.webhooks().pause_after)
        {
            paused = self
                .pause_failing_endpoint(&mut tx, endpoint, since, error)
                .await?;
        }
        let next_due = webhook_deliveries::next_due(&mut tx, lane).await?;
        let keep = active && !paused && next_due.is_some_and(|due| due <= now);
        let lease = keep.then(|| self.lease_of_lane(now));
        webhook_deliveries::set_lane(&mut tx, lane, next_due, lease).await?;
        tx.commit().await?;
        let outcome = match after {
            AfterFailure::RetryAt(_) => "retrying",
            AfterFailure::GivenUp => "given_up",
        };
        counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        Ok(if keep { Next::Send } else { Next::Stop })
    }

    /// Pauses an endpoint that has failed since `since`, announcing it
    /// (`webhook_endpoint.paused`); false when it was paused already.
    async fn pause_failing_endpoint(
        &self,
        conn: &mut sqlx::PgConnection,
        endpoint: &Endpoint,
        since: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        let now = self.now();
        let hours = (now - since).num_minutes() as f64 / 60.0;
        let reason = format!("failing for {hours:.1} h; last error: {error}");
        if !webhook_endpoints::pause(conn, endpoint.id, &reason, now).await? {
            return Ok(false);
        }
        let origin = endpoint.origin();
        tracing::warn!(endpoint = %endpoint.id, %origin, %reason, "webhook endpoint paused");
        counter!(WEBHOOK_PAUSES).increment(1);
        let paused = LifecycleEvent::WebhookEndpointPaused {
            endpoint_id: endpoint.id,
            origin,
            failing_since: since,
            last_error: error.to_owned(),
        };
        lifecycle::record(conn, None, now, [paused]).await?;
        Ok(true)
    }

    /// Gives the lane back, due when its first pending delivery is.
    async fn release_webhook_lane(&self, lane: Lane) -> Result<()> {
        let mut tx = self.store().bookkeeping().begin().await?;
        if webhook_deliveries::lock_lane(&mut tx, lane, self.inner.worker_id)
            .await?
            .is_some()
        {
            let next_due = webhook_deliveries::next_due(&mut tx, lane).await?;
            webhook_deliveries::set_lane(&mut tx, lane, next_due, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes events (and their deliveries) past the retention, in
    /// batches; returns how many went.
    pub async fn purge_old_events(&self, retention: Duration, batch: i64) -> Result<u64> {
        let cutoff = self.now() - TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX);
        let mut conn = self.store().pool().acquire().await?;
        store::billing_events::purge(&mut conn, cutoff, batch).await
    }
}
