//! Which events a new reading of a subscription produces, against the copy
//! held before it. Every way a subscription changes (checkout, our own
//! billing changes, Stripe's renewals and dunning, the dashboard) arrives as
//! such a reading, so this one rule covers them all.
//!
//! - `subscription.activated`: it starts granting access (first seen
//!   granting, or leaving `incomplete`). Nothing else is reported with it.
//! - `subscription.ended`: it is over for good, having started. Nothing
//!   else either.
//! - Otherwise `subscription.updated` when status, plan, billing cycle,
//!   paid seats or the seats scheduled to drop changed; with it
//!   `payment.failed` (into `past_due` or `unpaid`) or `payment.recovered`
//!   (from them back to `active`); `subscription.cancellation_scheduled` or
//!   `_withdrawn` when `cancel_at_period_end` turns; and the billing-cycle
//!   change events when a pending change appears, goes, or is applied.

use chrono::{DateTime, Utc};

use super::{CycleChange, LifecycleEvent, SubscriptionField};
use crate::domain::subscription::{PendingCycleChange, Subscription};

pub fn subscription_events(
    previous: Option<&Subscription>,
    current: &Subscription,
    now: DateTime<Utc>,
) -> Vec<LifecycleEvent> {
    let status = current.status();
    let activated = status.grants_access()
        && !current.is_over(now)
        && previous.is_none_or(|p| p.status().awaits_first_payment());
    if activated {
        return vec![LifecycleEvent::SubscriptionActivated(current.clone())];
    }
    let Some(previous) = previous else {
        return Vec::new();
    };
    if current.is_over(now) && !previous.is_over(now) {
        return if previous.status().awaits_first_payment() {
            // A checkout that was never paid: it never started.
            Vec::new()
        } else {
            vec![LifecycleEvent::SubscriptionEnded(current.clone())]
        };
    }
    let mut events = Vec::new();
    let changed = changed_fields(previous, current);
    if !changed.is_empty() {
        events.push(LifecycleEvent::SubscriptionUpdated {
            subscription: current.clone(),
            previous: Box::new(previous.clone()),
            changed: changed.clone(),
        });
    }
    if changed.contains(&SubscriptionField::Status) {
        let was = previous.status();
        let previous_status = previous.status_raw.clone();
        if status.is_payment_failing() && !was.is_payment_failing() {
            events.push(LifecycleEvent::PaymentFailed {
                subscription: current.clone(),
                previous_status,
            });
        } else if was.is_payment_failing() && status.is_paid_up() {
            events.push(LifecycleEvent::PaymentRecovered {
                subscription: current.clone(),
                previous_status,
            });
        }
    }
    match (previous.cancel_at_period_end, current.cancel_at_period_end) {
        (false, true) => events.push(LifecycleEvent::SubscriptionCancellationScheduled(
            current.clone(),
        )),
        (true, false) => events.push(LifecycleEvent::SubscriptionCancellationWithdrawn(
            current.clone(),
        )),
        (false, false) | (true, true) => {}
    }
    events.extend(cycle_change_events(previous, current));
    events
}

fn changed_fields(previous: &Subscription, current: &Subscription) -> Vec<SubscriptionField> {
    let scheduled = |s: &Subscription| s.pending_seat_decrease.as_ref().map(|p| p.seats);
    [
        (
            SubscriptionField::Status,
            previous.status_raw == current.status_raw,
        ),
        (SubscriptionField::Plan, previous.plan == current.plan),
        (
            SubscriptionField::BillingCycle,
            previous.billing_cycle == current.billing_cycle,
        ),
        (
            SubscriptionField::PaidSeats,
            previous.paid_seats == current.paid_seats,
        ),
        (
            SubscriptionField::ScheduledSeats,
            scheduled(previous) == scheduled(current),
        ),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

fn cycle_change_events(previous: &Subscription, current: &Subscription) -> Vec<LifecycleEvent> {
    let change = |pending: &PendingCycleChange, from| CycleChange {
        stripe_subscription_id: current.stripe_subscription_id.clone(),
        from,
        to: pending.cycle,
        effective_at: pending.effective_at,
        next_payment: Some(pending.next_payment.clone()),
    };
    match (
        &previous.pending_cycle_change,
        &current.pending_cycle_change,
    ) {
        (None, None) => Vec::new(),
        (None, Some(pending)) => vec![LifecycleEvent::BillingCycleChangeScheduled(change(
            pending,
            current.billing_cycle,
        ))],
        (Some(pending), None) => {
            let applied = current.billing_cycle == Some(pending.cycle)
                && previous.billing_cycle != current.billing_cycle;
            let event = change(pending, previous.billing_cycle);
            vec![if applied {
                LifecycleEvent::BillingCycleChangeApplied(event)
            } else {
                LifecycleEvent::BillingCycleChangeCanceled(event)
            }]
        }
        (Some(before), Some(after)) if before.cycle == after.cycle => Vec::new(),
        // Replaced by a change to another cycle (possible from the dashboard).
        (Some(before), Some(after)) => vec![
            LifecycleEvent::BillingCycleChangeCanceled(change(before, previous.billing_cycle)),
            LifecycleEvent::BillingCycleChangeScheduled(change(after, current.billing_cycle)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::lifecycle::EventType::{self, *};
    use crate::domain::money::{Currency, Money};
    use crate::domain::pricing::{BillingCycle, PlanId};
    use crate::domain::subscription::PendingSeatDecrease;
    use crate::domain::test_fixtures;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn sub(status: &str) -> Subscription {
        test_fixtures::subscription(status, 3, now() - TimeDelta::days(40))
    }

    fn with(status: &str, change: impl Fn(&mut Subscription)) -> Subscription {
        let mut s = sub(status);
        change(&mut s);
        s
    }

    fn types(events: &[LifecycleEvent]) -> Vec<EventType> {
        events.iter().map(LifecycleEvent::event_type).collect()
    }

    fn yearly_pending() -> Option<PendingCycleChange> {
        Some(PendingCycleChange {
            cycle: BillingCycle::Yearly,
            effective_at: now() + TimeDelta::days(10),
            next_payment: Money::new(54_000, Currency::parse("usd").unwrap()),
        })
    }

    #[test]
    fn each_change_of_a_reading_produces_exactly_its_events() {
        let ended = |s: &mut Subscription| s.ended_at = Some(now() - TimeDelta::seconds(1));
        let table: Vec<(&str, Option<Subscription>, Subscription, Vec<EventType>)> = vec![
            (
                "first seen active",
                None,
                sub("active"),
                vec![SubscriptionActivated],
            ),
            (
                "first seen trialing",
                None,
                sub("trialing"),
                vec![SubscriptionActivated],
            ),
            (
                "checkout paid",
                Some(sub("incomplete")),
                sub("active"),
                vec![SubscriptionActivated],
            ),
            (
                "first seen unpaid checkout",
                None,
                sub("incomplete"),
                vec![],
            ),
            (
                "checkout expired unpaid",
                Some(sub("incomplete")),
                sub("incomplete_expired"),
                vec![],
            ),
            (
                "nothing changed",
                Some(sub("active")),
                sub("active"),
                vec![],
            ),
            (
                "the period rolled over",
                Some(sub("active")),
                with("active", |s| s.current_period_end = Some(now())),
                vec![],
            ),
            (
                "more seats",
                Some(sub("active")),
                with("active", |s| s.paid_seats = 5),
                vec![SubscriptionUpdated],
            ),
            (
                "a seat decrease scheduled",
                Some(sub("active")),
                with("active", |s| {
                    s.pending_seat_decrease = Some(PendingSeatDecrease {
                        seats: 2,
                        effective_at: now(),
                    })
                }),
                vec![SubscriptionUpdated],
            ),
            (
                "plan changed",
                Some(sub("active")),
                with("active", |s| s.plan = PlanId::new("enterprise")),
                vec![SubscriptionUpdated],
            ),
            (
                "card declined at renewal",
                Some(sub("active")),
                sub("past_due"),
                vec![SubscriptionUpdated, PaymentFailed],
            ),
            (
                "unpaid after dunning",
                Some(sub("past_due")),
                sub("unpaid"),
                vec![SubscriptionUpdated],
            ),
            (
                "paid after dunning",
                Some(sub("past_due")),
                sub("active"),
                vec![SubscriptionUpdated, PaymentRecovered],
            ),
            (
                "paused",
                Some(sub("active")),
                sub("paused"),
                vec![SubscriptionUpdated],
            ),
            (
                "cancel at period end",
                Some(sub("active")),
                with("active", |s| s.cancel_at_period_end = true),
                vec![SubscriptionCancellationScheduled],
            ),
            (
                "cancellation undone",
                Some(with("active", |s| s.cancel_at_period_end = true)),
                sub("active"),
                vec![SubscriptionCancellationWithdrawn],
            ),
            (
                "canceled",
                Some(sub("active")),
                sub("canceled"),
                vec![SubscriptionEnded],
            ),
            (
                "ended while past due",
                Some(sub("past_due")),
                with("past_due", ended),
                vec![SubscriptionEnded],
            ),
            ("still over", Some(sub("canceled")), sub("canceled"), vec![]),
            (
                "cycle change scheduled",
                Some(sub("active")),
                with("active", |s| s.pending_cycle_change = yearly_pending()),
                vec![BillingCycleChangeScheduled],
            ),
            (
                "cycle change withdrawn",
                Some(with("active", |s| {
                    s.pending_cycle_change = yearly_pending()
                })),
                sub("active"),
                vec![BillingCycleChangeCanceled],
            ),
            (
                "renewed on the new cycle",
                Some(with("active", |s| {
                    s.pending_cycle_change = yearly_pending()
                })),
                with("active", |s| s.billing_cycle = Some(BillingCycle::Yearly)),
                vec![SubscriptionUpdated, BillingCycleChangeApplied],
            ),
        ];
        for (case, previous, current, want) in table {
            let events = subscription_events(previous.as_ref(), &current, now());
            assert_eq!(types(&events), want, "{case}");
        }
    }

    #[test]
    fn an_update_names_the_fields_with_both_states() {
        let before = sub("active");
        let after = with("past_due", |s| s.paid_seats = 4);
        let events = subscription_events(Some(&before), &after, now());
        let LifecycleEvent::SubscriptionUpdated {
            subscription,
            previous,
            changed,
        } = &events[0]
        else {
            panic!("expected an update first: {events:?}");
        };
        assert_eq!(
            changed,
            &[SubscriptionField::Status, SubscriptionField::PaidSeats]
        );
        assert_eq!((previous.as_ref(), subscription), (&before, &after));
        assert!(matches!(
            &events[1],
            LifecycleEvent::PaymentFailed { previous_status, .. } if previous_status == "active"
        ));
    }

    #[test]
    fn an_applied_cycle_change_names_both_cycles() {
        let before = with("active", |s| s.pending_cycle_change = yearly_pending());
        let after = with("active", |s| s.billing_cycle = Some(BillingCycle::Yearly));
        let events = subscription_events(Some(&before), &after, now());
        let Some(LifecycleEvent::BillingCycleChangeApplied(change)) = events.last() else {
            panic!("expected the change applied: {events:?}");
        };
        assert_eq!(change.from, Some(BillingCycle::Monthly));
        assert_eq!(change.to, BillingCycle::Yearly);
    }
}
