//! Turning the billing provider's view of a subscription into ours.
//!
//! The Stripe adapter reads a subscription (with its schedule) into a
//! [`ProviderSubscription`]; [`reconcile`] decides what it means locally.
//! Everything is taken from the provider as it is now, so applying the
//! latest state twice, or after an older one, gives the same result. The
//! one thing Stripe's quantities do not show is what was paid for the
//! current period after a decrease (decreases apply, unprorated, at the
//! next period): [`paid_seats_this_period`] reads it from the metadata the
//! decrease wrote, and from our copy of the same period.

use chrono::{DateTime, Utc};

use super::line_items::{LineItem, SeatTerms, seat_terms};
use super::metadata::KeptSeats;
use super::money::{Currency, Money};
use super::pricing::{BillingCycle, KnownSeatPrice, PlanId};
use super::subscription::{
    PendingCycleChange, PendingSeatDecrease, Subscription, SubscriptionStatus,
};

/// A subscription as the provider reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSubscription {
    pub id: String,
    pub customer_id: String,
    /// Exactly as the provider reports it.
    pub status_raw: String,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The organization named in the metadata, unparsed.
    pub org_id: Option<String>,
    /// The user who bought it, from the metadata, unparsed.
    pub purchaser: Option<String>,
    /// Seats paid for a period after a decrease during it (metadata).
    pub kept_seats: Option<KeptSeats>,
    /// The discounts on the subscription as a whole, carried into both
    /// phases of a billing-cycle change.
    pub discount_ids: Vec<String>,
    pub schedule: Option<ProviderSchedule>,
}

impl ProviderSubscription {
    pub fn status(&self) -> SubscriptionStatus {
        SubscriptionStatus::parse(&self.status_raw)
    }

    /// Whether it grants access at `now` (the rule of [`Subscription::counts_at`]).
    pub fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.status().counts(self.ended_at, now)
    }

    /// Whether it is over for good (the rule of [`Subscription::is_over`]).
    pub fn is_over(&self, now: DateTime<Utc>) -> bool {
        self.status().is_over(self.ended_at, now)
    }

    /// What the items say about seats, plan and cycle.
    pub fn seat_terms(&self, seat_price: impl Fn(&str) -> Option<KnownSeatPrice>) -> SeatTerms {
        seat_terms(&self.items, seat_price)
    }

    /// The schedule, while it still drives the subscription.
    pub fn active_schedule(&self) -> Option<&ProviderSchedule> {
        self.schedule.as_ref().filter(|s| s.active)
    }

    /// The schedule of a billing-cycle change this service made, while it
    /// still drives the subscription.
    pub fn our_cycle_change(&self) -> Option<&ProviderSchedule> {
        self.schedule.as_ref().filter(|s| s.is_our_cycle_change())
    }
}

/// A subscription schedule attached to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSchedule {
    pub id: String,
    /// Whether this service created it (its metadata says so).
    pub ours: bool,
    /// Whether it still drives the subscription (not released, canceled or
    /// completed).
    pub active: bool,
    pub phases: Vec<SchedulePhase>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePhase {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub items: Vec<LineItem>,
}

impl ProviderSchedule {
    /// Whether this is exactly the schedule a billing-cycle change creates:
    /// ours, still active, with its two phases. Only such a schedule may be
    /// released by `CancelBillingCycleChange`.
    pub fn is_our_cycle_change(&self) -> bool {
        self.ours && self.active && self.phases.len() == 2
    }
}

/// What the schedule, if any, will change about the cycle: the first phase
/// after the current one whose paid seat price is on another cycle.
pub fn pending_cycle_change(
    schedule: Option<&ProviderSchedule>,
    current_cycle: Option<BillingCycle>,
    currency: &Currency,
    now: DateTime<Utc>,
    seat_price: &impl Fn(&str) -> Option<KnownSeatPrice>,
) -> Option<PendingCycleChange> {
    let schedule = schedule.filter(|s| s.active)?;
    schedule
        .phases
        .iter()
        .filter(|phase| phase.start > now)
        .find_map(|phase| {
            let terms = seat_terms(&phase.items, seat_price);
            let cycle = terms.cycle?;
            (Some(cycle) != current_cycle).then(|| PendingCycleChange {
                cycle,
                effective_at: phase.start,
                next_payment: Money::new(terms.next_payment_minor, currency.clone()),
            })
        })
}

/// The seats paid for `live`'s current period: its seat quantity, or more
/// when a decrease during the period left paid seats behind, as the
/// decrease recorded on the subscription or as our copy of the same period
/// (`previous`) says. A copy of an older period says nothing: the renewal
/// already billed the lower quantity.
pub fn paid_seats_this_period(
    previous: Option<&Subscription>,
    live: &ProviderSubscription,
    seat_price: &impl Fn(&str) -> Option<KnownSeatPrice>,
) -> i64 {
    let shown = seat_terms(&live.items, seat_price).paid_seats;
    let period = live.current_period_start;
    let recorded = live.kept_seats.and_then(|kept| kept.for_period(period));
    let stored = previous
        .filter(|p| p.current_period_start.is_some() && p.current_period_start == period)
        .map(|p| p.paid_seats);
    [Some(shown), recorded, stored]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(shown)
}

/// The local subscription that `live` amounts to, given what was stored
/// before (`previous`) and the plan to fall back on when no item is a known
/// seat price.
pub fn reconcile(
    previous: Option<&Subscription>,
    live: &ProviderSubscription,
    fallback_plan: &PlanId,
    now: DateTime<Utc>,
    seat_price: &impl Fn(&str) -> Option<KnownSeatPrice>,
) -> Subscription {
    let terms = seat_terms(&live.items, seat_price);
    let paid = paid_seats_this_period(previous, live, seat_price);
    let (paid_seats, pending_seat_decrease) = match live.current_period_end {
        Some(period_end) if paid > terms.paid_seats => (
            paid,
            Some(PendingSeatDecrease {
                seats: terms.paid_seats,
                effective_at: period_end,
            }),
        ),
        Some(_) | None => (terms.paid_seats, None),
    };
    let pending_cycle_change = pending_cycle_change(
        live.schedule.as_ref(),
        terms.cycle,
        &live.currency,
        now,
        seat_price,
    );
    Subscription {
        stripe_subscription_id: live.id.clone(),
        status_raw: live.status_raw.clone(),
        plan: terms
            .plan
            .or_else(|| previous.map(|p| p.plan.clone()))
            .unwrap_or_else(|| fallback_plan.clone()),
        billing_cycle: terms.cycle.or(previous.and_then(|p| p.billing_cycle)),
        paid_seats,
        current_period_start: live.current_period_start,
        current_period_end: live.current_period_end,
        cancel_at_period_end: live.cancel_at_period_end,
        ended_at: live.ended_at,
        next_payment: Some(Money::new(terms.next_payment_minor, live.currency.clone())),
        created_at: live.created_at,
        pending_seat_decrease,
        pending_cycle_change,
        schedule_id: live.active_schedule().map(|s| s.id.clone()),
        purchaser: live.purchaser.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::test_fixtures;

    fn seat_price(price_id: &str) -> Option<KnownSeatPrice> {
        let (plan, cycle) = match price_id {
            "price_teams_monthly" => ("teams", BillingCycle::Monthly),
            "price_teams_yearly" => ("teams", BillingCycle::Yearly),
            _ => return None,
        };
        Some(KnownSeatPrice {
            plan: PlanId::new(plan),
            cycle,
        })
    }

    /// Teams Monthly at `seats` seats, in a period starting at `start`.
    fn live(seats: i64, start: DateTime<Utc>) -> ProviderSubscription {
        test_fixtures::live(seats, start + TimeDelta::days(1))
    }

    fn sync(previous: Option<&Subscription>, live: &ProviderSubscription) -> Subscription {
        let now = live.current_period_start.unwrap() + TimeDelta::days(1);
        reconcile(previous, live, &PlanId::new("teams"), now, &seat_price)
    }

    #[test]
    fn an_increase_applies_at_once_and_a_decrease_waits_for_the_next_period() {
        let start = Utc::now();
        let three = sync(None, &live(3, start));
        assert_eq!(three.paid_seats, 3);
        assert_eq!(three.next_payment.as_ref().unwrap().amount_minor, 5400);

        let five = sync(Some(&three), &live(5, start));
        assert_eq!(
            (five.paid_seats, five.pending_seat_decrease.clone()),
            (5, None)
        );

        let decreased = sync(Some(&five), &live(3, start));
        assert_eq!(decreased.paid_seats, 5);
        assert_eq!(
            decreased.pending_seat_decrease,
            Some(PendingSeatDecrease {
                seats: 3,
                effective_at: start + TimeDelta::days(30)
            })
        );
        // The same state applied again changes nothing.
        assert_eq!(sync(Some(&decreased), &live(3, start)), decreased);

        let renewed = sync(Some(&decreased), &live(3, start + TimeDelta::days(30)));
        assert_eq!(
            (renewed.paid_seats, renewed.pending_seat_decrease),
            (3, None)
        );
    }

    #[test]
    fn a_schedule_phase_on_the_other_cycle_is_a_pending_change() {
        let start = Utc::now();
        let mut sub = live(3, start);
        let renewal = start + TimeDelta::days(30);
        sub.schedule = Some(ProviderSchedule {
            id: "sub_sched_1".into(),
            ours: true,
            active: true,
            phases: vec![
                SchedulePhase {
                    start,
                    end: Some(renewal),
                    items: sub.items.clone(),
                },
                SchedulePhase {
                    start: renewal,
                    end: None,
                    items: vec![test_fixtures::item(
                        "si_yearly",
                        "price_teams_yearly",
                        18000,
                        3,
                        BillingCycle::Yearly,
                    )],
                },
            ],
        });
        let synced = sync(None, &sub);
        let change = synced.pending_cycle_change.clone().unwrap();
        assert_eq!(change.cycle, BillingCycle::Yearly);
        assert_eq!(change.effective_at, renewal);
        assert_eq!(change.next_payment.amount_minor, 54000);
        assert_eq!(synced.schedule_id.as_deref(), Some("sub_sched_1"));

        sub.schedule.as_mut().unwrap().active = false;
        let released = sync(Some(&synced), &sub);
        assert_eq!(
            (released.pending_cycle_change, released.schedule_id),
            (None, None)
        );
    }
}
