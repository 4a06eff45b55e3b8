//! Catch-up from Stripe's Events API (the window is chosen in
//! `domain::stripe_catch_up`): events our endpoint never received go into
//! the inbox exactly as if they had been delivered, and the inbox worker
//! applies them like any other. One replica runs at a time (a lease on the
//! cursor's row); no connection is held while Stripe is listed.

use chrono::TimeDelta;

use super::Service;
use crate::domain::stripe_catch_up::window;
use crate::error::Result;
use crate::store::stripe_catch_up;
use crate::store::stripe_events::{self, EventSource, ReceivedEvent};
use crate::stripe::event_list::ListedEvent;
use crate::stripe::events::ACTED_ON_TYPES;

/// How long a run may list before another replica may start one.
const CATCH_UP_LEASE: TimeDelta = TimeDelta::minutes(10);

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatchUpReport {
    /// Whether this replica ran it (another one held the lease otherwise).
    pub ran: bool,
    /// Events Stripe listed in the window.
    pub listed: usize,
    /// Of those, the ones the inbox did not have.
    pub stored: usize,
}

impl Service {
    /// Lists the events of the types we act on since the cursor and stores
    /// those not stored yet; the cursor moves only after a complete run.
    /// The caller wakes the inbox worker when some were stored.
    pub async fn catch_up_stripe_events(&self) -> Result<CatchUpReport> {
        let stripe = self.stripe()?;
        let started = self.now();
        let claim = {
            let mut conn = self.store().pool().acquire().await?;
            stripe_catch_up::claim(&mut conn, started, started + CATCH_UP_LEASE).await?
        };
        let Some(claim) = claim else {
            return Ok(CatchUpReport::default());
        };
        let window = window(claim.listed_until, claim.newest_stored, started);
        if window.clipped {
            tracing::warn!(
                since = %window.since,
                "catch-up starts at the oldest event Stripe still lists; anything older is left to reconciliation"
            );
        }
        let mut report = CatchUpReport {
            ran: true,
            ..CatchUpReport::default()
        };
        let listed = self.list_and_store(stripe, window.since, &mut report).await;
        let mut conn = self.store().pool().acquire().await?;
        match listed {
            Ok(()) => {
                let stored = i64::try_from(report.stored).unwrap_or(i64::MAX);
                stripe_catch_up::finish(&mut conn, started, stored).await?;
                if report.stored > 0 {
                    tracing::info!(
                        listed = report.listed,
                        stored = report.stored,
                        "catch-up found events that were never delivered"
                    );
                }
                Ok(report)
            }
            Err(error) => {
                // What was stored stays; the next run lists the window again.
                stripe_catch_up::release(&mut conn).await?;
                Err(error)
            }
        }
    }

    async fn list_and_store(
        &self,
        stripe: &crate::stripe::StripeApi,
        since: chrono::DateTime<chrono::Utc>,
        report: &mut CatchUpReport,
    ) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = stripe
                .list_events(since, &ACTED_ON_TYPES, after.as_deref())
                .await?;
            report.listed += page.events.len();
            let events: Vec<ReceivedEvent<'_>> = page.events.iter().map(caught_up).collect();
            let stored = {
                let mut conn = self.store().pool().acquire().await?;
                stripe_events::insert_new(&mut conn, &events, EventSource::CatchUp).await?
            };
            report.stored += stored.len();
            match page.events.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                Some(_) | None => return Ok(()),
            }
        }
    }
}

fn caught_up(event: &ListedEvent) -> ReceivedEvent<'_> {
    ReceivedEvent {
        id: &event.id,
        event_type: &event.event_type,
        raw_body: &event.body,
        stripe_created_at: event.created,
        subscription_id: event.subscription_id.as_deref(),
    }
}
