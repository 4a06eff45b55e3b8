//! Billing-cycle changes: at the renewal, through a subscription schedule.
//!
//! The schedule has two phases: the subscription's items as they are until
//! the period ends, then the same items on the new cycle's prices, billed
//! from the phase start and never prorated, after which it releases the
//! subscription. Stripe bills every item of a subscription on one interval,
//! so the paid seat price and the plan's per-unit items move to the new
//! cycle's prices, and any other item (free seats, add-ons) must already be
//! billed on the new cycle, or the change is refused naming it.
//!
//! While the change is pending, the phases must follow every change of the
//! items (seats, per-unit items), or the renewal would bring the old
//! quantities back: [`realign`] plans that.

use chrono::{DateTime, Utc};

use super::catalog::{Catalog, Plan};
use super::line_items::{LineItem, seat_terms};
use super::operation::{CycleChangePhases, PriceQuantity, Refusal, ScheduleRef, Step};
use super::pricing::BillingCycle;
use super::reason::ErrorReason;
use super::subscription_sync::{ProviderSubscription, pending_cycle_change};

/// What a billing-cycle change request comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CyclePlan {
    /// The same change is already pending: a retried request.
    AlreadyPending,
    Switch {
        from: BillingCycle,
        to: BillingCycle,
        effective_at: DateTime<Utc>,
        steps: Vec<Step>,
    },
}

/// Plans the switch of `live` to `to` at its renewal.
pub fn plan_cycle_change(
    live: &ProviderSubscription,
    to: BillingCycle,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<CyclePlan, Refusal> {
    if pending_switch(live, catalog, now) == Some(to) {
        return Ok(CyclePlan::AlreadyPending);
    }
    if live.active_schedule().is_some() {
        return Err(Refusal::not_now(
            ErrorReason::ScheduleActive,
            "a subscription schedule is already active; cancel the pending change first",
        ));
    }
    let terms = live.seat_terms(|price| catalog.seat_price(price));
    let (Some(plan), Some(from)) = (terms.plan.and_then(|id| catalog.plan(&id)), terms.cycle)
    else {
        return Err(Refusal::not_now(
            ErrorReason::PriceNotConfigured,
            "the subscription has no seat price this catalog knows",
        ));
    };
    if from == to {
        return Err(Refusal::not_now(
            ErrorReason::CycleUnchanged,
            format!("the subscription is already billed {}", to.as_str()),
        ));
    }
    let (Some(period_start), Some(period_end)) =
        (live.current_period_start, live.current_period_end)
    else {
        return Err(Refusal::not_now(
            ErrorReason::NoSubscription,
            "the subscription has no current period",
        ));
    };
    let phases = CycleChangePhases {
        schedule: ScheduleRef::CreatedInStep(0),
        subscription_id: live.id.clone(),
        period_start,
        period_end,
        current: price_quantities(&live.items),
        next: items_for_cycle(&live.items, plan, to)?,
        discounts: live.discount_ids.clone(),
    };
    Ok(CyclePlan::Switch {
        from,
        to,
        effective_at: period_end,
        steps: vec![
            Step::CreateSchedule {
                subscription_id: live.id.clone(),
            },
            Step::SetCycleChangePhases(phases),
        ],
    })
}

/// What to do when a switch's phases could not be set after its schedule
/// was made: release the schedule, so it blocks nothing.
pub fn undo_unfinished_switch() -> Vec<Step> {
    vec![Step::ReleaseSchedule {
        schedule: ScheduleRef::CreatedInStep(0),
    }]
}

/// Drops a pending change: releases the schedule, but only one this service
/// made and left as it made it.
pub fn plan_cancel_cycle_change(live: &ProviderSubscription) -> Result<Vec<Step>, Refusal> {
    let schedule = live.our_cycle_change().ok_or_else(|| {
        Refusal::not_now(
            ErrorReason::NoPendingChange,
            "no billing-cycle change is pending",
        )
    })?;
    Ok(vec![Step::ReleaseSchedule {
        schedule: ScheduleRef::Existing(schedule.id.clone()),
    }])
}

/// The cycle our schedule switches `live` to at its renewal, while pending.
pub fn pending_switch(
    live: &ProviderSubscription,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Option<BillingCycle> {
    let seat_price = |price: &str| catalog.seat_price(price);
    let current = live.seat_terms(seat_price).cycle;
    pending_cycle_change(
        live.our_cycle_change(),
        current,
        &live.currency,
        now,
        &seat_price,
    )
    .map(|change| change.cycle)
}

/// The step that makes a pending switch's phases match `items`, the
/// subscription's items once the planned changes are made; `None` when no
/// switch of ours is pending or its phases already match.
pub fn realign(
    live: &ProviderSubscription,
    items: &[LineItem],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<Option<Step>, Refusal> {
    let (Some(to), Some(schedule)) = (pending_switch(live, catalog, now), live.our_cycle_change())
    else {
        return Ok(None);
    };
    let Some(plan) = seat_terms(items, |price| catalog.seat_price(price))
        .plan
        .and_then(|id| catalog.plan(&id))
    else {
        return Ok(None);
    };
    let (current, next) = (price_quantities(items), items_for_cycle(items, plan, to)?);
    let [first, second] = schedule.phases.as_slice() else {
        return Ok(None);
    };
    if same_lines(&current, &first.items) && same_lines(&next, &second.items) {
        return Ok(None);
    }
    Ok(Some(Step::SetCycleChangePhases(CycleChangePhases {
        schedule: ScheduleRef::Existing(schedule.id.clone()),
        subscription_id: live.id.clone(),
        period_start: first.start,
        period_end: second.start,
        current,
        next,
        discounts: live.discount_ids.clone(),
    })))
}

/// `items` on `to`'s prices.
fn items_for_cycle(
    items: &[LineItem],
    plan: &Plan,
    to: BillingCycle,
) -> Result<Vec<PriceQuantity>, Refusal> {
    let missing = |what: &str| {
        Refusal::not_now(
            ErrorReason::PriceNotConfigured,
            format!(
                "no Stripe price is configured for {what} billed {}",
                to.as_str()
            ),
        )
    };
    let mut stuck = Vec::new();
    let mut moved = Vec::with_capacity(items.len());
    for item in items {
        let is_seat = plan
            .prices
            .iter()
            .any(|p| p.stripe_price_id.as_deref() == Some(item.price_id.as_str()));
        let unit = plan
            .unit_items
            .iter()
            .find(|unit| unit.prices_stripe(&item.price_id));
        let price_id = if is_seat {
            plan.price(to)
                .and_then(|p| p.stripe_price_id.clone())
                .ok_or_else(|| missing(plan.id.as_str()))?
        } else if let Some(unit) = unit {
            unit.price(to)
                .and_then(|p| p.stripe_price_id.clone())
                .ok_or_else(|| missing(&unit.id))?
        } else if item.interval.is_none_or(|cycle| cycle == to) {
            item.price_id.clone()
        } else {
            stuck.push(item.price_id.as_str());
            continue;
        };
        moved.push(PriceQuantity {
            price_id,
            quantity: item.quantity,
        });
    }
    if !stuck.is_empty() {
        return Err(Refusal::not_now(
            ErrorReason::ItemsOnOtherCycle,
            format!(
                "the subscription has items billed on another cycle that this catalog cannot move to {} billing ({}); remove them first",
                to.as_str(),
                stuck.join(", ")
            ),
        ));
    }
    Ok(moved)
}

fn price_quantities(items: &[LineItem]) -> Vec<PriceQuantity> {
    items
        .iter()
        .map(|item| PriceQuantity {
            price_id: item.price_id.clone(),
            quantity: item.quantity,
        })
        .collect()
}

/// Whether a phase lists the same prices and quantities, in any order.
fn same_lines(lines: &[PriceQuantity], phase: &[LineItem]) -> bool {
    let mut want: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| (l.price_id.as_str(), l.quantity))
        .collect();
    let mut have: Vec<(&str, i64)> = phase
        .iter()
        .map(|i| (i.price_id.as_str(), i.quantity))
        .collect();
    want.sort_unstable();
    have.sort_unstable();
    want == have
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::reason::Refused;
    use crate::domain::subscription_sync::ProviderSchedule;
    use crate::domain::test_fixtures::{catalog, item, live, with_yearly_switch};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn lines(pairs: &[(&str, i64)]) -> Vec<PriceQuantity> {
        pairs
            .iter()
            .map(|(price, quantity)| PriceQuantity {
                price_id: (*price).into(),
                quantity: *quantity,
            })
            .collect()
    }

    fn phases_of(steps: &[Step]) -> &CycleChangePhases {
        match steps {
            [
                Step::CreateSchedule { .. },
                Step::SetCycleChangePhases(phases),
            ] => phases,
            other => panic!("not a switch: {other:?}"),
        }
    }

    #[test]
    fn monthly_to_yearly_moves_the_seat_price_and_the_unit_item_at_the_period_end() {
        let mut sub = live(3, now());
        sub.items.push(item(
            "si_units",
            "price_hosted_instances_monthly",
            1000,
            2,
            BillingCycle::Monthly,
        ));
        let CyclePlan::Switch {
            from,
            to,
            effective_at,
            steps,
        } = plan_cycle_change(&sub, BillingCycle::Yearly, &catalog(), now()).unwrap()
        else {
            panic!("a switch");
        };
        assert_eq!((from, to), (BillingCycle::Monthly, BillingCycle::Yearly));
        assert_eq!(Some(effective_at), sub.current_period_end);
        let phases = phases_of(&steps);
        assert_eq!(phases.schedule, ScheduleRef::CreatedInStep(0));
        assert_eq!(
            phases.current,
            lines(&[
                ("price_teams_monthly", 3),
                ("price_hosted_instances_monthly", 2)
            ])
        );
        assert_eq!(
            phases.next,
            lines(&[
                ("price_teams_yearly", 3),
                ("price_hosted_instances_yearly", 2)
            ])
        );
    }

    #[test]
    fn a_retried_switch_is_already_pending_and_the_current_cycle_is_refused() {
        let pending = with_yearly_switch(live(3, now()));
        assert_eq!(
            plan_cycle_change(&pending, BillingCycle::Yearly, &catalog(), now()),
            Ok(CyclePlan::AlreadyPending)
        );
        let refused = plan_cycle_change(&live(3, now()), BillingCycle::Monthly, &catalog(), now());
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("already billed"))
        );
    }

    #[test]
    fn any_active_schedule_blocks_a_new_switch() {
        let mut sub = live(3, now());
        sub.schedule = Some(ProviderSchedule {
            id: "sub_sched_dashboard".into(),
            ours: false,
            active: true,
            phases: vec![],
        });
        let refused = plan_cycle_change(&sub, BillingCycle::Yearly, &catalog(), now());
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("schedule"))
        );
        // Ours, switching the other way: cancel it first.
        let mut ours = with_yearly_switch(live(3, now()));
        ours.items[0].price_id = "price_teams_monthly".into();
        let refused = plan_cycle_change(&ours, BillingCycle::Monthly, &catalog(), now());
        assert!(refused.is_err());
    }

    #[test]
    fn items_on_the_old_interval_that_cannot_move_are_named() {
        // (case, extra item, target, allowed)
        let cases = [
            (
                "monthly free seats cannot follow to yearly",
                item(
                    "si_free",
                    "price_teams_free_seat",
                    0,
                    2,
                    BillingCycle::Monthly,
                ),
                BillingCycle::Yearly,
                false,
            ),
            (
                "a monthly add-on cannot follow to yearly",
                item(
                    "si_addon",
                    "price_addon_agent",
                    500,
                    1,
                    BillingCycle::Monthly,
                ),
                BillingCycle::Yearly,
                false,
            ),
            (
                "a yearly add-on already bills on the new cycle",
                item(
                    "si_addon",
                    "price_addon_yearly",
                    9900,
                    1,
                    BillingCycle::Yearly,
                ),
                BillingCycle::Yearly,
                true,
            ),
        ];
        for (case, extra, to, allowed) in cases {
            let mut sub = live(3, now());
            sub.items.push(extra.clone());
            let planned = plan_cycle_change(&sub, to, &catalog(), now());
            match planned {
                Ok(CyclePlan::Switch { steps, .. }) => {
                    assert!(allowed, "{case}");
                    let next = &phases_of(&steps).next;
                    assert!(next.iter().any(|l| l.price_id == extra.price_id), "{case}");
                }
                Err(Refusal::NotNow(Refused { message, .. })) => {
                    assert!(!allowed, "{case}: {message}");
                    assert!(message.contains(&extra.price_id), "{case}: {message}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_switch_needs_the_target_price_configured() {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML)
            .unwrap()
            .with_stripe_price_ids(|plan, _, cycle| {
                (cycle == BillingCycle::Monthly)
                    .then(|| format!("price_{}_{}", plan.as_str(), cycle.as_str()))
            });
        let refused = plan_cycle_change(&live(3, now()), BillingCycle::Yearly, &catalog, now());
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("teams billed yearly"))
        );
    }

    #[test]
    fn only_our_own_pending_switch_can_be_canceled() {
        let ours = with_yearly_switch(live(3, now()));
        assert_eq!(
            plan_cancel_cycle_change(&ours),
            Ok(vec![Step::ReleaseSchedule {
                schedule: ScheduleRef::Existing("sub_sched_1".into())
            }])
        );
        let mut foreign = ours.clone();
        foreign.schedule.as_mut().unwrap().ours = false;
        assert!(plan_cancel_cycle_change(&foreign).is_err());
        assert!(plan_cancel_cycle_change(&live(3, now())).is_err());
    }

    #[test]
    fn a_pending_switch_follows_changed_items_in_both_phases() {
        let pending = with_yearly_switch(live(3, now()));
        assert_eq!(
            realign(&pending, &pending.items, &catalog(), now()),
            Ok(None)
        );
        let mut six = pending.items.clone();
        six[0].quantity = 6;
        let Some(Step::SetCycleChangePhases(phases)) =
            realign(&pending, &six, &catalog(), now()).unwrap()
        else {
            panic!("a realignment");
        };
        assert_eq!(phases.schedule, ScheduleRef::Existing("sub_sched_1".into()));
        assert_eq!(phases.current, lines(&[("price_teams_monthly", 6)]));
        assert_eq!(phases.next, lines(&[("price_teams_yearly", 6)]));
        assert_eq!(Some(phases.period_end), pending.current_period_end);
        // Without a pending switch of ours there is nothing to follow.
        assert_eq!(realign(&live(3, now()), &six, &catalog(), now()), Ok(None));
        // Once the renewal has passed, the switch is no longer pending.
        let later = now() + TimeDelta::days(40);
        assert_eq!(realign(&pending, &six, &catalog(), later), Ok(None));
    }
}
