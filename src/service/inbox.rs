//! Applying stored webhook events, one claim at a time.
//!
//! An event is claimed with a lease (one statement), applied with no
//! transaction open while Stripe is read, then finished in a short
//! transaction together with its effects. A worker that dies leaves the
//! event due again when its lease ends. Subscription events are never
//! applied from their payload: the subscription is re-read from Stripe, so
//! events in any order, any number of times, converge on Stripe's state.

use chrono::TimeDelta;

use super::Service;
use crate::domain::checkout::SessionStatus;
use crate::domain::retry::RetryPolicy;
use crate::error::{Error, Result};
use crate::instruments::{INBOX_APPLIED, INBOX_APPLY_DURATION};
use crate::store;
use crate::store::stripe_events::{self, ClaimedEvent, Outcome};
use crate::stripe::events::{BillingEvent, SubscriptionRef};

/// What the worker did with one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerStep {
    /// Nothing was due.
    Idle,
    Finished {
        event_id: String,
        outcome: Outcome,
    },
    Failed {
        event_id: String,
        parked: bool,
    },
    /// Stripe is rate-limiting us: the event waits, uncounted, and the
    /// worker pauses before its next claim.
    Throttled {
        event_id: String,
    },
}

/// How long a rate-limited event waits before it is due again.
const THROTTLED_EVENT_WAIT: TimeDelta = TimeDelta::seconds(10);

impl Service {
    /// Claims one due inbox event and applies it.
    pub async fn apply_next_stripe_event(&self, retry: RetryPolicy) -> Result<WorkerStep> {
        let claimed = {
            let mut conn = self.store().pool().acquire().await?;
            let lease_until = self.lease_ending(self.inner.settings.event_lease);
            stripe_events::claim_due(&mut conn, self.now(), lease_until).await?
        };
        let Some(event) = claimed else {
            return Ok(WorkerStep::Idle);
        };
        let started = std::time::Instant::now();
        let step = self.apply_claimed(event, retry).await;
        if let Ok(step) = &step {
            let outcome = match step {
                WorkerStep::Idle => None,
                WorkerStep::Finished { outcome, .. } => Some(outcome.as_str()),
                WorkerStep::Failed { parked: true, .. } => Some("parked"),
                WorkerStep::Failed { parked: false, .. } => Some("failed"),
                WorkerStep::Throttled { .. } => Some("throttled"),
            };
            if let Some(outcome) = outcome {
                metrics::counter!(INBOX_APPLIED, "outcome" => outcome).increment(1);
                metrics::histogram!(INBOX_APPLY_DURATION).record(started.elapsed().as_secs_f64());
            }
        }
        step
    }

    /// Applies a claimed event, or records why it could not be applied.
    async fn apply_claimed(&self, event: ClaimedEvent, retry: RetryPolicy) -> Result<WorkerStep> {
        match self.apply_event(&event).await {
            Ok(outcome) => Ok(WorkerStep::Finished {
                event_id: event.id,
                outcome,
            }),
            Err(Error::RateLimited(reason)) => {
                tracing::info!(event_id = %event.id, %reason, "Stripe is rate-limiting; the event waits");
                let mut conn = self.store().pool().acquire().await?;
                stripe_events::defer(
                    &mut conn,
                    &event.id,
                    &reason,
                    self.now() + THROTTLED_EVENT_WAIT,
                )
                .await?;
                Ok(WorkerStep::Throttled { event_id: event.id })
            }
            Err(error) => {
                let attempts = u32::try_from(event.attempts).unwrap_or(0) + 1;
                let retry_at = retry.next_attempt(attempts, self.now());
                tracing::warn!(
                    event_id = %event.id,
                    event_type = %event.event_type,
                    attempts,
                    parked = retry_at.is_none(),
                    error = %error,
                    "applying a Stripe event failed"
                );
                let mut conn = self.store().pool().acquire().await?;
                stripe_events::record_failure(
                    &mut conn,
                    &event.id,
                    &error.to_string(),
                    retry_at,
                    self.now(),
                )
                .await?;
                Ok(WorkerStep::Failed {
                    event_id: event.id,
                    parked: retry_at.is_none(),
                })
            }
        }
    }

    /// Applies the event and marks it finished with its effects.
    async fn apply_event(&self, event: &ClaimedEvent) -> Result<Outcome> {
        let parsed = BillingEvent::parse(&event.raw_body).map_err(Error::internal)?;
        let outcome = match parsed {
            BillingEvent::Unsupported { .. } => {
                self.finish_without_effect(event, "an event type this service does not act on")
                    .await?
            }
            BillingEvent::NotOurs => {
                self.finish_without_effect(event, "about an object of no organization of ours")
                    .await?
            }
            BillingEvent::CreditPurchasePaid(payment) => {
                let mut tx = self.store().begin().await?;
                let outcome = self.credit_payment(&mut tx, payment).await?;
                stripe_events::finish(&mut tx, &event.id, outcome, None, self.now()).await?;
                self.commit(tx).await?;
                outcome
            }
            BillingEvent::CheckoutExpired { session_id } => {
                let mut tx = self.store().begin().await?;
                store::checkout_sessions::set_status(&mut tx, &session_id, SessionStatus::Expired)
                    .await?;
                stripe_events::finish(&mut tx, &event.id, Outcome::Applied, None, self.now())
                    .await?;
                self.commit(tx).await?;
                Outcome::Applied
            }
            BillingEvent::SubscriptionChanged(subscription) => {
                self.apply_subscription_event(event, &subscription).await?
            }
        };
        Ok(outcome)
    }

    async fn apply_subscription_event(
        &self,
        event: &ClaimedEvent,
        named: &SubscriptionRef,
    ) -> Result<Outcome> {
        let org = {
            let mut conn = self.store().pool().acquire().await?;
            self.org_for(
                &mut conn,
                &named.subscription_id,
                named.customer_id.as_deref(),
                named.org_id,
            )
            .await?
        };
        let Some(org) = org else {
            tracing::info!(
                event_id = %event.id,
                subscription = %named.subscription_id,
                "Stripe event for a subscription of no organization of ours"
            );
            let note = format!(
                "subscription {} belongs to no organization of ours",
                named.subscription_id
            );
            return self.finish_without_effect(event, &note).await;
        };
        let ticket = self.sync_ticket(&named.subscription_id).await?;
        let live = match self.stripe()?.subscription(&named.subscription_id).await {
            Ok(live) => live,
            // Stripe does not know it (a test-mode object deleted since, an
            // event of another account): there is nothing to follow, and
            // retrying would not change that.
            Err(Error::NotFound(reason)) => {
                tracing::info!(
                    event_id = %event.id,
                    subscription = %named.subscription_id,
                    %reason,
                    "Stripe does not know the event's subscription; recorded without effect"
                );
                let note = format!(
                    "Stripe does not know subscription {}: {reason}",
                    named.subscription_id
                );
                return self.finish_without_effect(event, &note).await;
            }
            Err(error) => return Err(error),
        };
        let mut tx = self.store().begin().await?;
        self.store_live(&mut tx, org, &live, Some(ticket)).await?;
        if let Some(session) = &named.completed_session {
            store::checkout_sessions::set_status(&mut tx, session, SessionStatus::Complete).await?;
        }
        stripe_events::finish(&mut tx, &event.id, Outcome::Applied, None, self.now()).await?;
        // The reading began after this claim, so it covers every event of
        // the subscription stored before it: one fetch for all of them.
        let covered = stripe_events::finish_covered(
            &mut tx,
            &named.subscription_id,
            &event.id,
            event.claimed_at,
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        if covered > 0 {
            tracing::info!(event_id = %event.id, subscription = %named.subscription_id, covered, "one reading applied several events");
        }
        // The event is done; an upkeep it called for runs on its own.
        self.upkeep_after(org, "a Stripe event").await;
        Ok(Outcome::Applied)
    }

    async fn finish_without_effect(&self, event: &ClaimedEvent, note: &str) -> Result<Outcome> {
        let mut conn = self.store().pool().acquire().await?;
        stripe_events::finish(
            &mut conn,
            &event.id,
            Outcome::NoEffect,
            Some(note),
            self.now(),
        )
        .await?;
        Ok(Outcome::NoEffect)
    }
}
