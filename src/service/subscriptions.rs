//! Paid subscriptions through Stripe: checkout, seats, billing cycle,
//! cancellation, the billing portal.
//!
//! Each use case checks the caller's role and the local state first, then
//! reads the subscription from Stripe (the plan and items are taken from the
//! live prices, not our copy), makes its change with an idempotency key
//! derived from the request and the state it acted on (so a retried RPC
//! repeats the same Stripe call), and stores what Stripe answered. The
//! organization's row stays locked throughout, which serializes billing
//! changes of one organization.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record};
use super::{Actor, Service, load_state, lock_org};
use crate::domain::catalog::{BillingCycle, PlanId};
use crate::domain::ids::{OrgId, RedirectUrl};
use crate::domain::line_items::{LineItem, seat_terms};
use crate::domain::role::OrgAction;
use crate::domain::subscription::Subscription;
use crate::domain::subscription_sync::{
    ORG_ID_KEY, PLAN_KEY, PURCHASER_KEY, ProviderSubscription, SEATS_TYPE, TYPE_KEY,
    pending_cycle_change,
};
use crate::error::{Error, Result};
use crate::store;
use crate::stripe::api::{CheckoutRequest, CycleChange, SeatChangeOutcome, StripeApi};

/// The seats one checkout may buy.
pub const CHECKOUT_SEATS: std::ops::RangeInclusive<i64> = 1..=100;
/// The most seats a subscription may be changed to.
pub const MAX_SEATS: i64 = 10_000;

/// Idempotency windows for sessions whose URLs expire: a retry inside the
/// window gets the same session, a later request a fresh one.
const CHECKOUT_KEY_WINDOW_SECS: i64 = 3600;
const PORTAL_KEY_WINDOW_SECS: i64 = 300;

#[derive(Debug, Clone)]
pub struct CheckoutOrder {
    pub plan: PlanId,
    pub cycle: BillingCycle,
    pub seats: i64,
    pub success_url: RedirectUrl,
    pub cancel_url: RedirectUrl,
}

/// The result of a seat change.
#[derive(Debug, Clone)]
pub struct SeatChange {
    pub subscription: Subscription,
    /// Set when the prorated invoice needs the customer to authenticate the
    /// payment: the page where they can. The seats are added once paid.
    pub authentication_url: Option<String>,
    pub requires_authentication: bool,
}

/// What a new subscription should start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResubscribeDefaults {
    pub plan: PlanId,
    pub cycle: BillingCycle,
    pub seats: i64,
}

impl Service {
    pub(super) fn stripe(&self) -> Result<&StripeApi> {
        self.inner
            .stripe
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("Stripe is not configured".into()))
    }

    pub async fn create_checkout_session(
        &self,
        actor: &Actor,
        org_id: OrgId,
        order: CheckoutOrder,
    ) -> Result<String> {
        if !CHECKOUT_SEATS.contains(&order.seats) {
            return Err(Error::invalid(
                "seats",
                format!(
                    "must be from {} to {}",
                    CHECKOUT_SEATS.start(),
                    CHECKOUT_SEATS.end()
                ),
            ));
        }
        let plan = self
            .catalog()
            .plan(&order.plan)
            .ok_or_else(|| Error::invalid("plan", "is not in the catalog"))?;
        let price = plan
            .price(order.cycle)
            .filter(|price| price.offered_for_signup(self.signup_policy()))
            .ok_or_else(|| {
                Error::invalid(
                    "billing_cycle",
                    format!(
                        "{} billing is not offered for {}",
                        order.cycle.as_str(),
                        plan.display_name
                    ),
                )
            })?;
        let stripe = self.stripe()?;
        let price_id = price.stripe_price_id.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no Stripe price is configured for {} {}",
                plan.id,
                order.cycle.as_str()
            ))
        })?;
        let now = self.now();
        let mut conn = self.store().pool().acquire().await?;
        let org = super::load_org(&mut conn, org_id).await?;
        self.authorize(&mut conn, actor, org_id, OrgAction::ManageBilling)
            .await?;
        let subscriptions = store::subscriptions::list_for_org(&mut conn, org_id).await?;
        if let Some(live) = subscriptions.iter().find(|s| !s.is_over(now)) {
            return Err(Error::FailedPrecondition(format!(
                "the organization already has a subscription ({}); change it instead",
                live.status_raw
            )));
        }
        let customer = self.customer_for(&mut conn, org_id, &org.name).await?;
        let mut metadata = HashMap::from([
            (ORG_ID_KEY.to_owned(), org_id.to_string()),
            (PLAN_KEY.to_owned(), plan.id.to_string()),
            (TYPE_KEY.to_owned(), SEATS_TYPE.to_owned()),
        ]);
        if let Actor::User(user) = actor {
            metadata.insert(PURCHASER_KEY.to_owned(), user.to_string());
        }
        let key = derived_key(
            "checkout",
            &[
                &org_id.to_string(),
                &actor.audit_name(),
                &price_id,
                &order.seats.to_string(),
                order.success_url.as_str(),
                order.cancel_url.as_str(),
                &(now.timestamp() / CHECKOUT_KEY_WINDOW_SECS).to_string(),
            ],
        );
        stripe
            .create_checkout_session(
                CheckoutRequest {
                    customer_id: &customer,
                    price_id: &price_id,
                    seats: order.seats.unsigned_abs(),
                    success_url: order.success_url.as_str(),
                    cancel_url: order.cancel_url.as_str(),
                    subscription_metadata: metadata,
                },
                key,
            )
            .await
    }

    pub async fn create_billing_portal_session(
        &self,
        actor: &Actor,
        org_id: OrgId,
        return_url: RedirectUrl,
    ) -> Result<String> {
        let stripe = self.stripe()?;
        let now = self.now();
        let mut conn = self.store().pool().acquire().await?;
        let org = super::load_org(&mut conn, org_id).await?;
        self.authorize(&mut conn, actor, org_id, OrgAction::ManageBilling)
            .await?;
        let customer = self.customer_for(&mut conn, org_id, &org.name).await?;
        let key = derived_key(
            "portal",
            &[
                &customer,
                return_url.as_str(),
                &(now.timestamp() / PORTAL_KEY_WINDOW_SECS).to_string(),
            ],
        );
        stripe
            .create_portal_session(&customer, return_url.as_str(), key)
            .await
    }

    /// The organization's Stripe customer, created on first use. Two first
    /// calls at once share one idempotency key, so Stripe creates one
    /// customer and both record the same id.
    pub(super) async fn customer_for(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        name: &str,
    ) -> Result<String> {
        if let Some(customer) = store::organizations::stripe_customer(conn, org).await? {
            return Ok(customer);
        }
        let created = self.stripe()?.create_customer(org, name).await?;
        store::organizations::remember_stripe_customer(conn, org, &created).await
    }

    /// Sets the subscription's seats (free seats included). More seats are
    /// charged, prorated, at once; fewer take effect at the next renewal.
    pub async fn update_seat_count(
        &self,
        actor: &Actor,
        org_id: OrgId,
        seats: i64,
    ) -> Result<SeatChange> {
        if !(1..=MAX_SEATS).contains(&seats) {
            return Err(Error::invalid(
                "seats",
                format!("must be from 1 to {MAX_SEATS}"),
            ));
        }
        let mut change = self.begin_billing_change(actor, org_id).await?;
        let now = self.now();
        let used = store::members::seat_holders(&mut change.tx, org_id, now)
            .await?
            .used_at(now);
        if seats < used {
            return Err(Error::FailedPrecondition(format!(
                "cannot reduce to {seats} seats: {used} seats are in use"
            )));
        }
        let catalog = self.catalog();
        let terms = seat_terms(&change.live.items, |price| catalog.seat_price(price));
        let paid_item = terms
            .seat_item
            .filter(|item| item.unit_amount_minor > 0)
            .ok_or_else(|| {
                Error::FailedPrecondition("the subscription has no paid seat item".into())
            })?;
        let item_id = paid_item
            .item_id
            .clone()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("a subscription item without an id")))?;
        let free_seats = terms.paid_seats - paid_item.quantity;
        let paid_quantity = seats - free_seats;
        if paid_quantity < 1 {
            return Err(Error::FailedPrecondition(format!(
                "at least one paid seat is needed; {free_seats} of the seats are free"
            )));
        }
        if paid_quantity == paid_item.quantity {
            return Ok(SeatChange {
                subscription: self.finish_unchanged(change, org_id).await?,
                authentication_url: None,
                requires_authentication: false,
            });
        }
        let BillingChange {
            mut tx,
            current,
            live,
            version,
        } = change;
        let stripe = self.stripe()?;
        // Seats already paid for this period come back without a charge.
        let increase = seats > current.paid_seats;
        let key = derived_key(
            "seats",
            &[&live.id, &version, &item_id, &paid_quantity.to_string()],
        );
        let outcome = stripe
            .set_item_quantity(
                &live.id,
                &item_id,
                paid_quantity.unsigned_abs(),
                increase,
                key,
            )
            .await?;
        let (live, authentication_url, requires_authentication) = match outcome {
            SeatChangeOutcome::Done(live) => (live, None, false),
            SeatChangeOutcome::NeedsAuthentication {
                subscription,
                invoice_url,
            } => (subscription, invoice_url, true),
        };
        let subscription = self.store_live(&mut tx, org_id, &live).await?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::SeatCountChanged,
            Some(serde_json::json!({ "seats": current.paid_seats })),
            Some(serde_json::json!({
                "seats": seats,
                "awaiting_payment_authentication": requires_authentication,
            })),
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(SeatChange {
            subscription,
            authentication_url,
            requires_authentication,
        })
    }

    /// Switches the billing cycle at the next renewal through a
    /// subscription schedule; nothing is prorated.
    pub async fn change_billing_cycle(
        &self,
        actor: &Actor,
        org_id: OrgId,
        cycle: BillingCycle,
    ) -> Result<Subscription> {
        let change = self.begin_billing_change(actor, org_id).await?;
        let catalog = self.catalog();
        let live = &change.live;
        let already_pending = live
            .schedule
            .as_ref()
            .filter(|s| s.is_our_cycle_change())
            .and_then(|s| {
                pending_cycle_change(Some(s), None, &live.currency, self.now(), &|price| {
                    catalog.seat_price(price)
                })
            })
            .is_some_and(|pending| pending.cycle == cycle);
        if already_pending {
            // A retry of the request that made this change.
            return self.finish_unchanged(change, org_id).await;
        }
        let BillingChange {
            mut tx,
            live,
            version,
            ..
        } = change;
        let stripe = self.stripe()?;
        if live.schedule.as_ref().is_some_and(|s| s.active) {
            return Err(Error::FailedPrecondition(
                "a subscription schedule is already active; cancel the pending change first".into(),
            ));
        }
        let terms = seat_terms(&live.items, |price| catalog.seat_price(price));
        let (Some(plan_id), Some(from), Some(seat_item)) =
            (terms.plan, terms.cycle, terms.seat_item)
        else {
            return Err(Error::FailedPrecondition(
                "the subscription has no seat price this catalog knows".into(),
            ));
        };
        if from == cycle {
            return Err(Error::FailedPrecondition(format!(
                "the subscription is already billed {}",
                cycle.as_str()
            )));
        }
        let target_price = catalog
            .plan(&plan_id)
            .and_then(|plan| plan.price(cycle))
            .and_then(|price| price.stripe_price_id.clone())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "no Stripe price is configured for {plan_id} {}",
                    cycle.as_str()
                ))
            })?;
        let (Some(period_start), Some(period_end)) =
            (live.current_period_start, live.current_period_end)
        else {
            return Err(Error::FailedPrecondition(
                "the subscription has no current period".into(),
            ));
        };
        // The seat price swaps, and so does each of the plan's per-unit
        // items: Stripe bills all of a subscription's items on one interval.
        let unit_items = catalog
            .plan(&plan_id)
            .map(|plan| plan.unit_items.as_slice())
            .unwrap_or_default();
        let next_items = live
            .items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if item.item_id == seat_item.item_id {
                    item.price_id = target_price.clone();
                } else if let Some(unit) = unit_items
                    .iter()
                    .find(|unit| unit.prices_stripe(&item.price_id))
                {
                    item.price_id = unit
                        .price(cycle)
                        .and_then(|price| price.stripe_price_id.clone())
                        .ok_or_else(|| {
                            Error::FailedPrecondition(format!(
                                "no Stripe price is configured for {} billed {}",
                                unit.id,
                                cycle.as_str()
                            ))
                        })?;
                }
                Ok(item)
            })
            .collect::<Result<Vec<LineItem>>>()?;
        let key =
            |step: &str| derived_key("cycle-change", &[&live.id, &version, cycle.as_str(), step]);
        let schedule_id = stripe.create_schedule_from(&live.id, key("create")).await?;
        let phases = stripe
            .set_cycle_change_phases(
                &schedule_id,
                CycleChange {
                    subscription_id: &live.id,
                    current_items: &live.items,
                    next_items: &next_items,
                    period_start,
                    period_end,
                },
                &live.discount_ids,
                key("phases"),
            )
            .await;
        if let Err(error) = phases {
            // Do not leave a schedule behind that would block the next try.
            if let Err(release) = stripe.release_schedule(&schedule_id, key("release")).await {
                tracing::error!(schedule = %schedule_id, error = %release, "could not release an orphaned schedule");
            }
            // Outside the transaction, which the error rolls back: the next
            // attempt must not replay this one's keys (and its failure).
            let mut conn = self.store().pool().acquire().await?;
            store::subscriptions::bump_version(&mut conn, &live.id).await?;
            return Err(error);
        }
        let subscription = self.sync_subscription(&mut tx, org_id, &live.id).await?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::BillingCycleChangeScheduled,
            Some(serde_json::json!({ "billing_cycle": from.as_str() })),
            Some(serde_json::json!({
                "billing_cycle": cycle.as_str(),
                "effective_at": period_end,
                "schedule_id": schedule_id,
            })),
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(subscription)
    }

    /// Drops a pending billing-cycle change: releases the schedule, but only
    /// one this service made and left as it made it.
    pub async fn cancel_billing_cycle_change(
        &self,
        actor: &Actor,
        org_id: OrgId,
    ) -> Result<Subscription> {
        let BillingChange {
            mut tx,
            live,
            version,
            ..
        } = self.begin_billing_change(actor, org_id).await?;
        let stripe = self.stripe()?;
        let schedule = live
            .schedule
            .as_ref()
            .filter(|s| s.is_our_cycle_change())
            .ok_or_else(|| {
                Error::FailedPrecondition("no billing-cycle change is pending".into())
            })?;
        stripe
            .release_schedule(
                &schedule.id,
                derived_key("release", &[&schedule.id, &version]),
            )
            .await?;
        let subscription = self.sync_subscription(&mut tx, org_id, &live.id).await?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::BillingCycleChangeCanceled,
            Some(serde_json::json!({ "schedule_id": schedule.id })),
            None,
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(subscription)
    }

    /// Cancels at the end of the period. Stripe refuses while a schedule
    /// drives the subscription, so an active schedule is released first
    /// (and any still there afterwards, so it cannot renew the subscription).
    pub async fn cancel_subscription(&self, actor: &Actor, org_id: OrgId) -> Result<Subscription> {
        self.set_cancellation(actor, org_id, true).await
    }

    /// Undoes a cancellation before the period ends.
    pub async fn resume_subscription(&self, actor: &Actor, org_id: OrgId) -> Result<Subscription> {
        self.set_cancellation(actor, org_id, false).await
    }

    async fn set_cancellation(
        &self,
        actor: &Actor,
        org_id: OrgId,
        cancel: bool,
    ) -> Result<Subscription> {
        let change = self.begin_billing_change(actor, org_id).await?;
        if change.live.cancel_at_period_end == cancel {
            return self.finish_unchanged(change, org_id).await;
        }
        let BillingChange {
            mut tx,
            live,
            version,
            ..
        } = change;
        let stripe = self.stripe()?;
        let key = |step: &str| {
            derived_key(
                if cancel { "cancel" } else { "resume" },
                &[&live.id, &version, step],
            )
        };
        let mut updated = stripe
            .set_cancel_at_period_end(&live.id, cancel, key("update"))
            .await;
        if cancel
            && matches!(updated, Err(Error::FailedPrecondition(_)))
            && let Some(schedule) = live.schedule.as_ref().filter(|s| s.active)
        {
            stripe
                .release_schedule(&schedule.id, key("release-first"))
                .await?;
            updated = stripe
                .set_cancel_at_period_end(&live.id, cancel, key("update-after-release"))
                .await;
        }
        let mut updated = updated?;
        if cancel && let Some(schedule) = updated.schedule.as_ref().filter(|s| s.active) {
            stripe
                .release_schedule(&schedule.id, key("release-after"))
                .await?;
            updated = stripe.subscription(&live.id).await?;
        }
        let subscription = self.store_live(&mut tx, org_id, &updated).await?;
        record(
            &mut tx,
            org_id,
            actor,
            if cancel {
                AuditAction::SubscriptionCancelRequested
            } else {
                AuditAction::SubscriptionResumed
            },
            None,
            Some(serde_json::json!({ "cancel_at_period_end": cancel })),
            self.now(),
        )
        .await?;
        self.commit(tx).await?;
        Ok(subscription)
    }

    /// What a new checkout should offer: the plan, cycle and seats of the
    /// subscription that ended last (by end date), with at least the seats
    /// in use now; with none, one seat, yearly.
    pub async fn resubscribe_defaults(
        &self,
        actor: &Actor,
        org_id: OrgId,
    ) -> Result<ResubscribeDefaults> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = super::load_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::ManageBilling)
            .await?;
        let state = load_state(&mut tx, org, now).await?;
        let last_ended = state
            .subscriptions
            .iter()
            .filter_map(|s| s.ended_at.filter(|&end| end <= now).map(|end| (end, s)))
            .max_by_key(|(end, _)| *end)
            .map(|(_, s)| s);
        Ok(match last_ended {
            Some(ended) => ResubscribeDefaults {
                plan: ended.plan.clone(),
                cycle: ended.billing_cycle.unwrap_or(BillingCycle::Yearly),
                seats: ended.paid_seats.max(state.seats.used_at(now)).max(1),
            },
            None => ResubscribeDefaults {
                plan: state.org.plan.clone(),
                cycle: BillingCycle::Yearly,
                seats: 1,
            },
        })
    }

    /// Opens the transaction of a change to the organization's running
    /// subscription: locks the organization, checks the role, finds the
    /// subscription that has not ended and reads it from Stripe.
    async fn begin_billing_change(&self, actor: &Actor, org_id: OrgId) -> Result<BillingChange> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::ManageBilling)
            .await?;
        let stripe = self.stripe()?;
        let current = store::subscriptions::list_for_org(&mut tx, org_id)
            .await?
            .into_iter()
            .filter(|s| !s.is_over(now))
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| {
                Error::FailedPrecondition("the organization has no running subscription".into())
            })?;
        let version =
            store::subscriptions::version(&mut tx, &current.stripe_subscription_id).await?;
        let live = stripe.subscription(&current.stripe_subscription_id).await?;
        Ok(BillingChange {
            tx,
            current,
            live,
            version: version.to_string(),
        })
    }

    /// Ends a change that has nothing to ask of Stripe: stores what Stripe
    /// says now and commits.
    async fn finish_unchanged(&self, change: BillingChange, org_id: OrgId) -> Result<Subscription> {
        let BillingChange { mut tx, live, .. } = change;
        let subscription = self.store_live(&mut tx, org_id, &live).await?;
        self.commit(tx).await?;
        Ok(subscription)
    }
}

/// A change to a running subscription, under way.
struct BillingChange {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// Our copy of the subscription, as it was before the change.
    current: Subscription,
    /// The subscription as Stripe reports it now.
    live: ProviderSubscription,
    /// The stored state's version: with the request, it keys the Stripe
    /// writes, so a retry repeats them and a later request does not.
    version: String,
}

/// An idempotency key from what a request acted on: the same request on the
/// same state gives the same key.
pub(super) fn derived_key(operation: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!(
        "billing-service:{operation}:{}",
        hex::encode(hasher.finalize())
    )
}
