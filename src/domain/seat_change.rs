//! Seat changes: more seats apply now, prorated and invoiced (kept only if
//! paid); fewer apply from the next period, unprorated.
//!
//! Decided from the live subscription, because Stripe prorates an increase
//! from the quantity it shows. What the current period was paid for can be
//! more than that: a decrease during the period already lowered Stripe's
//! quantity. An increase past the paid seats then first puts the quantity
//! back to what was paid, without proration, and charges only the seats
//! beyond. A renewal Stripe made whose events we have not applied yet shows
//! as a new period, paid for at its own quantity.
//!
//! While one of our billing-cycle switches is pending, its schedule's
//! phases move with the seats, or the renewal would restore the old count.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::add_ons::Proration;
use super::catalog::Catalog;
use super::cycle_change::realign;
use super::metadata::{KeptSeats, PAID_SEATS_KEY};
use super::operation::{ItemQuantity, ItemsUpdate, PaymentProblem, Refusal, Step};
use super::reason::{ErrorReason, Refused};
use super::subscription::Subscription;
use super::subscription_sync::{ProviderSubscription, paid_seats_this_period};

/// The most seats a subscription may be changed to.
pub const MAX_SEATS: i64 = 10_000;

/// Which way the seats move against what this period was paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatDirection {
    /// More seats than paid for: the difference is charged now.
    Increase,
    /// Fewer: the paid seats last until the period ends.
    Decrease,
    /// Back to exactly the paid seats: a pending decrease is dropped.
    Restore,
}

/// A planned seat change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatChange {
    /// Seats paid for the current period before the change.
    pub paid: i64,
    /// Seats asked for (free seats included).
    pub seats: i64,
    pub direction: SeatDirection,
    pub period_end: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    /// Stripe's quantity before the change, when an increase first put the
    /// paid seats back: a declined payment returns to it.
    restored_from: Option<Restored>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Restored {
    subscription_id: String,
    item_id: String,
    quantity: i64,
    kept: KeptSeats,
}

impl SeatChange {
    /// Seats charged now, prorated.
    pub fn charged(&self) -> i64 {
        match self.direction {
            SeatDirection::Increase => self.seats - self.paid,
            SeatDirection::Decrease | SeatDirection::Restore => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatPlan {
    /// Stripe already shows the seats asked for.
    Unchanged,
    Change(SeatChange),
}

/// The seat count a change may ask for, checked before anything is
/// recorded or sent, and again when the change is planned.
pub fn check_seats(seats: i64) -> Result<(), Refusal> {
    if (1..=MAX_SEATS).contains(&seats) {
        Ok(())
    } else {
        Err(Refusal::invalid(
            "seats",
            format!("must be from 1 to {MAX_SEATS}"),
        ))
    }
}

/// Plans setting `live` to `seats` seats with `used` seats in use.
/// `previous` is our copy of the subscription, which says what a period
/// was paid for when the decrease was made outside this service.
pub fn plan_seat_change(
    live: &ProviderSubscription,
    previous: Option<&Subscription>,
    seats: i64,
    used: i64,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<SeatPlan, Refusal> {
    check_seats(seats)?;
    if seats < used {
        return Err(Refusal::NotNow(
            Refused::new(
                ErrorReason::SeatsInUse,
                format!("cannot reduce to {seats} seats: {used} seats are in use"),
            )
            .with("seatsUsed", used)
            .with("seatsRequested", seats),
        ));
    }
    let seat_price = |price: &str| catalog.seat_price(price);
    let terms = live.seat_terms(seat_price);
    let (paid_item, item_id) = terms
        .seat_item
        .as_ref()
        .filter(|item| item.unit_amount_minor > 0)
        .and_then(|item| Some((item, item.item_id.clone()?)))
        .ok_or_else(|| {
            Refusal::not_now(
                ErrorReason::NoSubscription,
                "the subscription has no paid seat item",
            )
        })?;
    let free = terms.paid_seats - paid_item.quantity;
    let quantity = seats - free;
    if quantity < 1 {
        return Err(Refusal::not_now(
            ErrorReason::PaidSeatRequired,
            format!("at least one paid seat is needed; {free} of the seats are free"),
        ));
    }
    let shown = terms.paid_seats;
    if seats == shown {
        return Ok(SeatPlan::Unchanged);
    }
    let paid = paid_seats_this_period(previous, live, &seat_price);
    let period_start = live.current_period_start.ok_or_else(|| {
        Refusal::not_now(
            ErrorReason::NoSubscription,
            "the subscription has no current period",
        )
    })?;
    let kept = KeptSeats {
        seats: paid,
        period_start,
    };
    let update = |quantity: i64, proration, only_if_paid, paid_seats: String| {
        Step::UpdateItems(ItemsUpdate {
            subscription_id: live.id.clone(),
            items: vec![ItemQuantity {
                item_id: item_id.clone(),
                quantity,
            }],
            proration,
            only_if_paid,
            // Stripe's pending updates take no metadata, and an increase has
            // nothing to record: its seats are paid.
            metadata: if only_if_paid {
                BTreeMap::new()
            } else {
                [(PAID_SEATS_KEY.to_owned(), paid_seats)].into()
            },
        })
    };
    let (direction, mut steps, restored_from) = if seats > paid {
        let mut steps = Vec::new();
        let restored_from = (shown < paid).then(|| {
            steps.push(update(paid - free, Proration::None, false, String::new()));
            Restored {
                subscription_id: live.id.clone(),
                item_id: item_id.clone(),
                quantity: paid_item.quantity,
                kept,
            }
        });
        steps.push(update(
            quantity,
            Proration::AlwaysInvoice,
            true,
            String::new(),
        ));
        (SeatDirection::Increase, steps, restored_from)
    } else if seats < paid {
        let decrease = update(quantity, Proration::None, false, kept.encode());
        (SeatDirection::Decrease, vec![decrease], None)
    } else {
        let restore = update(quantity, Proration::None, false, String::new());
        (SeatDirection::Restore, vec![restore], None)
    };
    let mut items = live.items.clone();
    for item in &mut items {
        if item.item_id.as_deref() == Some(item_id.as_str()) {
            item.quantity = quantity;
        }
    }
    steps.extend(realign(live, &items, catalog, now)?);
    Ok(SeatPlan::Change(SeatChange {
        paid,
        seats,
        direction,
        period_end: live.current_period_end,
        steps,
        restored_from,
    }))
}

/// What to send when an increase's invoice was not paid. A declined card
/// voids the invoice (which discards the pending update) and puts back a
/// quantity the plan restored first, so nothing of the change remains; a
/// payment waiting for the customer to authenticate stays as it is.
pub fn after_payment_problem(
    change: &SeatChange,
    problem: PaymentProblem,
    invoice_id: &str,
) -> Vec<Step> {
    match problem {
        PaymentProblem::NeedsAuthentication => Vec::new(),
        PaymentProblem::Declined => {
            let mut steps = vec![Step::VoidInvoice {
                invoice_id: invoice_id.to_owned(),
            }];
            steps.extend(undo_restore(change));
            steps
        }
    }
}

/// What to send when Stripe refused the increase after the plan had put
/// the paid seats back: return to the quantity Stripe showed before.
pub fn undo_restore(change: &SeatChange) -> Vec<Step> {
    change
        .restored_from
        .iter()
        .map(|restored| {
            Step::UpdateItems(ItemsUpdate {
                subscription_id: restored.subscription_id.clone(),
                items: vec![ItemQuantity {
                    item_id: restored.item_id.clone(),
                    quantity: restored.quantity,
                }],
                proration: Proration::None,
                only_if_paid: false,
                metadata: [(PAID_SEATS_KEY.to_owned(), restored.kept.encode())].into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::pricing::BillingCycle;
    use crate::domain::test_fixtures::{catalog, item, live, stored, with_yearly_switch};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn plan(
        live: &ProviderSubscription,
        previous: Option<&Subscription>,
        seats: i64,
        used: i64,
    ) -> Result<SeatPlan, Refusal> {
        plan_seat_change(live, previous, seats, used, &catalog(), now())
    }

    fn change(planned: Result<SeatPlan, Refusal>) -> SeatChange {
        match planned {
            Ok(SeatPlan::Change(change)) => change,
            other => panic!("not a change: {other:?}"),
        }
    }

    /// Each step as (quantity, proration, only if paid, paid-seats metadata).
    fn updates(steps: &[Step]) -> Vec<(i64, Proration, bool, String)> {
        steps
            .iter()
            .filter_map(|step| match step {
                Step::UpdateItems(u) => Some((
                    u.items[0].quantity,
                    u.proration,
                    u.only_if_paid,
                    u.metadata.get(PAID_SEATS_KEY).cloned().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }

    fn kept(seats: i64, live: &ProviderSubscription) -> String {
        KeptSeats {
            seats,
            period_start: live.current_period_start.unwrap(),
        }
        .encode()
    }

    #[test]
    fn an_increase_is_prorated_and_invoiced_and_kept_only_if_paid() {
        let three = live(3, now());
        let more = change(plan(&three, None, 5, 2));
        assert_eq!(
            (more.direction, more.paid, more.charged()),
            (SeatDirection::Increase, 3, 2)
        );
        assert_eq!(
            updates(&more.steps),
            [(5, Proration::AlwaysInvoice, true, String::new())]
        );
    }

    #[test]
    fn an_increase_after_a_pending_decrease_restores_the_paid_seats_and_charges_only_the_rest() {
        // 5 paid, decreased to 3 during the period; then 6 are asked for.
        let three = live(3, now());
        let copy = stored(&three, 5);
        let mut recorded = three.clone();
        recorded.kept_seats = KeptSeats::decode(&kept(5, &three));
        for (case, live, previous) in [
            ("our copy of the period says 5", &three, Some(&copy)),
            ("the subscription's metadata says 5", &recorded, None),
        ] {
            let more = change(plan(live, previous, 6, 2));
            assert_eq!((more.paid, more.charged()), (5, 1), "{case}");
            assert_eq!(
                updates(&more.steps),
                [
                    (5, Proration::None, false, String::new()),
                    (6, Proration::AlwaysInvoice, true, String::new()),
                ],
                "{case}"
            );
        }
    }

    #[test]
    fn an_increase_in_a_renewed_period_whose_events_are_late_charges_from_the_new_quantity() {
        // Our copy still has last period's 5 kept seats; Stripe has renewed at 3.
        let renewed = live(3, now());
        let mut last_period = stored(&renewed, 5);
        last_period.current_period_start = renewed
            .current_period_start
            .map(|start| start - TimeDelta::days(30));
        let mut stale_metadata = renewed.clone();
        stale_metadata.kept_seats = Some(KeptSeats {
            seats: 5,
            period_start: last_period.current_period_start.unwrap(),
        });
        for live in [&renewed, &stale_metadata] {
            let more = change(plan(live, Some(&last_period), 4, 2));
            assert_eq!((more.paid, more.charged()), (3, 1));
            assert_eq!(
                updates(&more.steps),
                [(4, Proration::AlwaysInvoice, true, String::new())]
            );
        }
    }

    #[test]
    fn a_decrease_waits_for_the_renewal_and_records_what_was_paid() {
        let five = live(5, now());
        let fewer = change(plan(&five, None, 3, 2));
        assert_eq!(
            (fewer.direction, fewer.charged()),
            (SeatDirection::Decrease, 0)
        );
        assert_eq!(fewer.period_end, five.current_period_end);
        assert_eq!(
            updates(&fewer.steps),
            [(3, Proration::None, false, kept(5, &five))]
        );
    }

    #[test]
    fn returning_to_the_paid_seats_drops_the_pending_decrease_without_a_charge() {
        let three = live(3, now());
        let back = change(plan(&three, Some(&stored(&three, 5)), 5, 2));
        assert_eq!(
            (back.direction, back.charged()),
            (SeatDirection::Restore, 0)
        );
        assert_eq!(
            updates(&back.steps),
            [(5, Proration::None, false, String::new())]
        );
    }

    #[test]
    fn refusals_name_the_numbers_and_what_stripe_shows_changes_nothing() {
        let five = live(5, now());
        let below = plan(&five, None, 1, 2);
        assert!(
            matches!(below, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains('1') && m.contains('2'))
        );
        assert!(matches!(
            plan(&five, None, 0, 0),
            Err(Refusal::Invalid { field: "seats", .. })
        ));
        assert!(matches!(
            plan(&five, None, MAX_SEATS + 1, 0),
            Err(Refusal::Invalid { .. })
        ));
        assert_eq!(plan(&five, None, 5, 2), Ok(SeatPlan::Unchanged));
        // A decrease already pending is what Stripe shows.
        let three = live(3, now());
        assert_eq!(
            plan(&three, Some(&stored(&three, 5)), 3, 2),
            Ok(SeatPlan::Unchanged)
        );
    }

    #[test]
    fn free_seats_count_as_seats_but_one_seat_must_be_paid() {
        let mut sub = live(3, now());
        sub.items.push(item(
            "si_free",
            "price_teams_free_seat",
            0,
            2,
            BillingCycle::Monthly,
        ));
        let more = change(plan(&sub, None, 6, 1));
        assert_eq!((more.paid, more.charged()), (5, 1));
        assert_eq!(updates(&more.steps)[0].0, 4, "paid quantity = 6 - 2 free");
        let refused = plan(&sub, None, 2, 1);
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("2 of the seats are free"))
        );
    }

    #[test]
    fn with_a_pending_switch_both_schedule_phases_move_with_the_seats() {
        // (asked, used, first quantity sent, then both phases at)
        for (asked, used, sent) in [(6, 2, 6), (2, 2, 2)] {
            let pending = with_yearly_switch(live(if asked > 3 { 3 } else { 4 }, now()));
            let planned = change(plan(&pending, None, asked, used));
            assert_eq!(updates(&planned.steps)[0].0, sent);
            let Some(Step::SetCycleChangePhases(phases)) = planned.steps.last() else {
                panic!("the schedule follows: {:?}", planned.steps);
            };
            assert_eq!(phases.current[0].quantity, asked);
            assert_eq!(phases.next[0].quantity, asked);
            assert_eq!(phases.next[0].price_id, "price_teams_yearly");
        }
    }

    #[test]
    fn a_declined_increase_leaves_nothing_behind_and_an_authentication_waits() {
        let three = live(3, now());
        let after_decrease = change(plan(&three, Some(&stored(&three, 5)), 6, 2));
        let undo = after_payment_problem(&after_decrease, PaymentProblem::Declined, "in_1");
        assert_eq!(
            undo[0],
            Step::VoidInvoice {
                invoice_id: "in_1".into()
            }
        );
        assert_eq!(
            updates(&undo),
            [(3, Proration::None, false, kept(5, &three))]
        );
        let simple = change(plan(&three, None, 5, 2));
        assert_eq!(
            after_payment_problem(&simple, PaymentProblem::Declined, "in_2").len(),
            1
        );
        assert!(
            after_payment_problem(&simple, PaymentProblem::NeedsAuthentication, "in_2").is_empty()
        );
    }
}
