//! Bringing our copy of a subscription in line with Stripe's: after a
//! webhook event names it, and after our own Stripe writes.
//!
//! Stripe is read with no transaction open. Two syncs of one subscription
//! may therefore finish in either order, so each takes a ticket before it
//! reads, and only the newest ticket's reading is stored: a slow, older
//! reading never overwrites a newer one. Every change at Stripe sends an
//! event whose sync starts after the change, so the last reading stored is
//! always at least as new as the last change.
//!
//! What a sync may then require of Stripe (cancel a duplicate, follow the
//! reported per-unit counts, realign a pending switch) is not done here:
//! it is queued as an upkeep operation, run once this transaction commits.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, STRIPE_ACTOR, record_as};
use super::{Service, lifecycle, lock_org};
use crate::domain::ids::OrgId;
use crate::domain::lifecycle::subscription::subscription_events;
use crate::domain::pricing::PlanId;
use crate::domain::subscription::Subscription;
use crate::domain::subscription_sync::{ProviderSubscription, reconcile};
use crate::domain::upkeep::upkeep_needed;
use crate::error::Result;
use crate::store;

impl Service {
    /// Takes a sync ticket for the subscription (before reading it or
    /// writing to it at Stripe).
    pub(super) async fn sync_ticket(&self, subscription_id: &str) -> Result<i64> {
        let mut conn = self.store().pool().acquire().await?;
        store::subscriptions::take_sync_ticket(&mut conn, subscription_id).await
    }

    /// Stores `live` for the organization in the caller's transaction, and
    /// queues an upkeep if it calls for one. With a `ticket`, nothing is
    /// stored when a newer reading was started since (the reading is still
    /// returned, for the caller's answer). Locks the organization.
    pub(super) async fn store_live(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        live: &ProviderSubscription,
        ticket: Option<i64>,
    ) -> Result<Subscription> {
        self.store_reading(conn, org, live, ticket, AfterSync::QueueUpkeep)
            .await
    }

    /// [`Self::store_live`] in a transaction of its own, then the upkeep it
    /// queued: for a reading that is all the caller (`after`) does.
    pub(super) async fn store_live_alone(
        &self,
        org: OrgId,
        live: &ProviderSubscription,
        ticket: i64,
        after: &str,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        self.store_live(&mut tx, org, live, Some(ticket)).await?;
        self.commit(tx).await?;
        self.upkeep_after(org, after).await;
        Ok(())
    }

    /// [`Self::store_live`], choosing whether an upkeep may follow.
    pub(super) async fn store_reading(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        live: &ProviderSubscription,
        ticket: Option<i64>,
        after: AfterSync,
    ) -> Result<Subscription> {
        let now = self.now();
        let organization = lock_org(conn, org).await?;
        let known = store::subscriptions::list_for_org(conn, org).await?;
        let (previous, synced) = self.synced(&known, &organization.plan, live, now);
        if let Some(ticket) = ticket
            && !store::subscriptions::holds_newest_ticket(conn, &live.id, ticket).await?
        {
            return Ok(synced);
        }
        let another_counts = known
            .iter()
            .any(|s| s.stripe_subscription_id != live.id && s.counts_at(now));
        let counts_reported = !store::usage_quantities::list(conn, org).await?.is_empty();
        if after == AfterSync::QueueUpkeep
            && upkeep_needed(
                previous,
                &synced,
                live,
                another_counts,
                counts_reported,
                self.catalog(),
                now,
            )
        {
            store::operations::queue_upkeep(conn, org, STRIPE_ACTOR, now).await?;
        }
        if previous == Some(&synced) {
            return Ok(synced);
        }
        store::subscriptions::upsert(conn, org, &synced).await?;
        let events = subscription_events(previous, &synced, now);
        lifecycle::record(conn, Some(org), now, events).await?;
        let another_runs = known
            .iter()
            .any(|s| s.stripe_subscription_id != live.id && !s.is_over(now));
        if synced.is_over(now) && previous.is_none_or(|p| !p.is_over(now)) && !another_runs {
            self.cancel_org_instances(conn, org).await?;
        }
        // The organization's plan follows the live seat price for as long as
        // the subscription lasts.
        if !synced.is_over(now) && synced.plan != organization.plan {
            store::organizations::set_plan(conn, org, &synced.plan).await?;
        }
        self.recheck_seats(conn, org, now).await?;
        record_as(
            conn,
            org,
            STRIPE_ACTOR,
            AuditAction::SubscriptionSynced,
            previous.map(subscription_snapshot),
            Some(subscription_snapshot(&synced)),
            now,
        )
        .await?;
        Ok(synced)
    }

    /// What syncing `live` would store, beside the copy of it among the
    /// organization's `known` subscriptions (if any): the one rule that
    /// both storing a reading and reconciliation's comparison apply.
    pub(super) fn synced<'a>(
        &self,
        known: &'a [Subscription],
        plan: &PlanId,
        live: &ProviderSubscription,
        now: DateTime<Utc>,
    ) -> (Option<&'a Subscription>, Subscription) {
        let previous = known.iter().find(|s| s.stripe_subscription_id == live.id);
        let catalog = self.catalog();
        let synced = reconcile(previous, live, plan, now, &|price| {
            catalog.seat_price(price)
        });
        (previous, synced)
    }

    /// Which organization a subscription belongs to: the one we stored it
    /// under, else the owner of its customer, else the one its metadata
    /// names. A deleted organization is ours no more.
    pub(super) async fn org_for(
        &self,
        conn: &mut PgConnection,
        subscription_id: &str,
        customer_id: Option<&str>,
        named: Option<OrgId>,
    ) -> Result<Option<OrgId>> {
        if let Some(org) = store::subscriptions::org_of(conn, subscription_id).await? {
            return Ok(store::organizations::get(conn, org).await?.map(|o| o.id));
        }
        if let Some(customer) = customer_id
            && let Some(org) = store::organizations::by_stripe_customer(conn, customer).await?
        {
            return Ok(Some(org));
        }
        match named {
            Some(org) if store::organizations::get(conn, org).await?.is_some() => Ok(Some(org)),
            Some(_) | None => Ok(None),
        }
    }
}

/// Whether storing a reading may queue an upkeep. An upkeep's own readings
/// do not: it has just brought Stripe in line, and one that could not
/// (Stripe refused) must not chase its own tail; the next event tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterSync {
    QueueUpkeep,
    NoUpkeep,
}

pub(super) fn subscription_snapshot(subscription: &Subscription) -> Value {
    json!({
        "stripe_subscription_id": subscription.stripe_subscription_id,
        "status": subscription.status_raw,
        "plan": subscription.plan.as_str(),
        "billing_cycle": subscription.billing_cycle.map(|c| c.as_str()),
        "paid_seats": subscription.paid_seats,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "pending_seats": subscription.pending_seat_decrease.as_ref().map(|p| p.seats),
        "pending_cycle": subscription.pending_cycle_change.as_ref().map(|p| p.cycle.as_str()),
        "purchaser_user_id": subscription.purchaser,
    })
}
