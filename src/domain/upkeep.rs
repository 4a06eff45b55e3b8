//! Upkeep: what a sync may find that we must then change at Stripe.
//!
//! - **A second live subscription.** Stripe cannot stop two Checkout
//!   sessions, a dashboard and the portal from each starting one. The
//!   oldest that counts is kept; every newer one is canceled at once and its
//!   payment refunded in full, so the customer is never billed twice.
//! - **Per-unit items** follow the counts reported for them (see
//!   [`super::add_ons::UnitItem::billed_quantity`]): added when the billed
//!   quantity first becomes non-zero, resized, removed at zero; an item
//!   with a minimum never goes below it.
//! - **A pending billing-cycle switch** whose schedule phases no longer
//!   match the items (a seat increase paid after authentication, a change
//!   in the portal) is realigned, so the renewal keeps what was bought.

use chrono::{DateTime, Utc};

use super::catalog::Catalog;
use super::cycle_change::realign;
use super::line_items::LineItem;
use super::operation::{Refusal, Step};
use super::subscription::Subscription;
use super::subscription_sync::ProviderSubscription;

/// A subscription to cancel, with the payments to refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub live: ProviderSubscription,
    /// The succeeded payments of its invoices (payment intent ids).
    pub payments: Vec<String>,
}

/// The live subscription the organization keeps, and the ones it must not
/// have: of those that count now, the oldest is kept.
pub fn split_duplicates(
    live: Vec<ProviderSubscription>,
    now: DateTime<Utc>,
) -> (Option<ProviderSubscription>, Vec<ProviderSubscription>) {
    let mut counting: Vec<ProviderSubscription> =
        live.into_iter().filter(|s| s.counts_at(now)).collect();
    counting.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut counting = counting.into_iter();
    (counting.next(), counting.collect())
}

/// A per-unit item's count as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedCount {
    pub item: String,
    pub count: i64,
}

/// A per-unit item set to its billed quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSync {
    pub item: String,
    pub quantity: i64,
    /// Whether Stripe had another quantity.
    pub changed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpkeepPlan {
    pub steps: Vec<Step>,
    pub canceled: Vec<String>,
    pub unit_items: Vec<UnitSync>,
    /// Items the catalog has no Stripe price for on the subscription's
    /// cycle: left alone, and reported to operators.
    pub unpriced: Vec<String>,
    pub realigned: bool,
}

/// Whether storing `synced` (read as `live`) calls for an upkeep: another
/// subscription counts beside it, it has just started counting while counts
/// are reported, or a pending switch of ours no longer matches its items.
pub fn upkeep_needed(
    previous: Option<&Subscription>,
    synced: &Subscription,
    live: &ProviderSubscription,
    another_counts: bool,
    counts_reported: bool,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> bool {
    let counts = synced.counts_at(now);
    let started = counts && previous.is_none_or(|p| !p.counts_at(now));
    (counts && another_counts)
        || (started && counts_reported)
        || matches!(realign(live, &live.items, catalog, now), Ok(Some(_)))
}

pub fn plan_upkeep(
    keeper: Option<&ProviderSubscription>,
    duplicates: &[Duplicate],
    reported: &[ReportedCount],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<UpkeepPlan, Refusal> {
    let mut plan = UpkeepPlan::default();
    for duplicate in duplicates {
        plan.steps.push(Step::CancelSubscriptionNow {
            subscription_id: duplicate.live.id.clone(),
        });
        plan.steps
            .extend(duplicate.payments.iter().map(|payment| Step::Refund {
                payment_intent_id: payment.clone(),
            }));
        plan.canceled.push(duplicate.live.id.clone());
    }
    let Some(keeper) = keeper else {
        return Ok(plan);
    };
    let terms = keeper.seat_terms(|price| catalog.seat_price(price));
    let (Some(tier), Some(cycle)) = (terms.plan.and_then(|id| catalog.plan(&id)), terms.cycle)
    else {
        return Ok(plan);
    };
    let mut items = keeper.items.clone();
    for report in reported {
        let Some(unit) = tier.unit_item(&report.item) else {
            continue;
        };
        let Some(price_id) = unit.price(cycle).and_then(|p| p.stripe_price_id.clone()) else {
            plan.unpriced.push(unit.id.clone());
            continue;
        };
        let desired = unit.billed_quantity(report.count);
        let position = items.iter().position(|line| line.price_id == price_id);
        let current = position.map_or(0, |i| items[i].quantity);
        let proration = unit.proration(current, desired);
        let item_id = position.and_then(|i| items[i].item_id.clone());
        let step = match (position, item_id, desired) {
            (None, _, 0) => None,
            (None, _, quantity) => {
                items.push(LineItem {
                    item_id: None,
                    price_id: price_id.clone(),
                    unit_amount_minor: unit.price(cycle).map_or(0, |p| p.amount.amount_minor),
                    quantity,
                    interval: Some(cycle),
                });
                Some(Step::AddItem {
                    subscription_id: keeper.id.clone(),
                    price_id,
                    quantity,
                    proration,
                })
            }
            (Some(_), _, quantity) if quantity == current => None,
            (Some(i), Some(item_id), 0) => {
                items.remove(i);
                Some(Step::RemoveItem { item_id, proration })
            }
            (Some(i), Some(item_id), quantity) => {
                items[i].quantity = quantity;
                Some(Step::SetItemQuantity {
                    item_id,
                    quantity,
                    proration,
                })
            }
            // Subscription items always carry their id; without one there
            // is nothing to address.
            (Some(_), None, _) => None,
        };
        plan.unit_items.push(UnitSync {
            item: unit.id.clone(),
            quantity: desired,
            changed: step.is_some(),
        });
        plan.steps.extend(step);
    }
    if let Some(step) = realign(keeper, &items, catalog, now)? {
        plan.steps.push(step);
        plan.realigned = true;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::add_ons::Proration;
    use crate::domain::pricing::BillingCycle;
    use crate::domain::test_fixtures::{catalog, item, live, with_yearly_switch};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn count(item: &str, count: i64) -> ReportedCount {
        ReportedCount {
            item: item.into(),
            count,
        }
    }

    fn enterprise(units: Option<i64>) -> ProviderSubscription {
        let mut sub = live(2, now());
        sub.items[0].price_id = "price_enterprise_monthly".into();
        sub.items[0].unit_amount_minor = 7200;
        if let Some(units) = units {
            sub.items.push(item(
                "si_units",
                "price_hosted_instances_monthly",
                1000,
                units,
                BillingCycle::Monthly,
            ));
        }
        sub
    }

    #[test]
    fn of_two_live_subscriptions_the_newer_is_canceled_and_refunded() {
        let first = live(3, now());
        let mut second = live(3, now());
        second.id = "sub_2".into();
        second.created_at = first.created_at + TimeDelta::minutes(1);
        let mut over = live(3, now());
        over.id = "sub_0".into();
        over.status_raw = "canceled".into();
        let (keeper, duplicates) =
            split_duplicates(vec![second.clone(), over, first.clone()], now());
        assert_eq!(keeper.as_ref().map(|s| s.id.as_str()), Some("sub_1"));
        assert_eq!(duplicates, [second.clone()]);
        let duplicates = [Duplicate {
            live: second,
            payments: vec!["pi_2".into()],
        }];
        let plan = plan_upkeep(keeper.as_ref(), &duplicates, &[], &catalog(), now()).unwrap();
        assert_eq!(
            plan.steps,
            [
                Step::CancelSubscriptionNow {
                    subscription_id: "sub_2".into()
                },
                Step::Refund {
                    payment_intent_id: "pi_2".into()
                }
            ]
        );
        assert_eq!(plan.canceled, ["sub_2"]);
    }

    #[test]
    fn unit_items_follow_the_counts_past_the_allowance_and_never_below_the_minimum() {
        let teams = live(3, now());
        let mut teams_with = teams.clone();
        teams_with.items.push(item(
            "si_units",
            "price_hosted_instances_monthly",
            1000,
            3,
            BillingCycle::Monthly,
        ));
        // (case, subscription, reported, expected step)
        let add = |quantity| Step::AddItem {
            subscription_id: "sub_1".into(),
            price_id: "price_hosted_instances_monthly".into(),
            quantity,
            proration: Proration::AlwaysInvoice,
        };
        let set = |quantity, proration| Step::SetItemQuantity {
            item_id: "si_units".into(),
            quantity,
            proration,
        };
        let table = [
            (
                "within the Teams allowance: nothing",
                teams.clone(),
                2,
                None,
            ),
            (
                "past it: added and invoiced",
                teams.clone(),
                5,
                Some(add(3)),
            ),
            ("the same count: nothing", teams_with.clone(), 5, None),
            (
                "more: invoiced",
                teams_with.clone(),
                6,
                Some(set(4, Proration::AlwaysInvoice)),
            ),
            (
                "fewer: from the next period",
                teams_with.clone(),
                4,
                Some(set(2, Proration::None)),
            ),
            (
                "back within the allowance: removed",
                teams_with,
                1,
                Some(Step::RemoveItem {
                    item_id: "si_units".into(),
                    proration: Proration::None,
                }),
            ),
            (
                "Enterprise at its minimum: kept",
                enterprise(Some(3)),
                0,
                None,
            ),
            (
                "Enterprise above it, back down to the minimum",
                enterprise(Some(5)),
                1,
                Some(set(3, Proration::None)),
            ),
        ];
        for (case, sub, reported, step) in table {
            let plan = plan_upkeep(
                Some(&sub),
                &[],
                &[count("hosted_instances", reported)],
                &catalog(),
                now(),
            )
            .unwrap();
            assert_eq!(plan.steps, step.into_iter().collect::<Vec<_>>(), "{case}");
        }
    }

    #[test]
    fn upkeep_is_needed_for_a_duplicate_a_start_with_counts_or_a_drifted_switch() {
        use crate::domain::subscription_sync::reconcile;
        let seat_price = |price: &str| catalog().seat_price(price);
        let sync = |live: &ProviderSubscription| {
            reconcile(
                None,
                live,
                &crate::domain::pricing::PlanId::new("teams"),
                now(),
                &seat_price,
            )
        };
        let running = live(3, now());
        let stored = sync(&running);
        let mut drifted = with_yearly_switch(live(3, now()));
        drifted.items[0].quantity = 4;
        // (case, previous, live, another counts, counts reported, needed)
        let table = [
            (
                "a second live subscription",
                Some(&stored),
                &running,
                true,
                false,
                true,
            ),
            (
                "just started, counts reported",
                None,
                &running,
                false,
                true,
                true,
            ),
            (
                "just started, nothing reported",
                None,
                &running,
                false,
                false,
                false,
            ),
            (
                "already running, counts reported",
                Some(&stored),
                &running,
                false,
                true,
                false,
            ),
            (
                "a switch that no longer matches",
                Some(&stored),
                &drifted,
                false,
                false,
                true,
            ),
        ];
        for (case, previous, live, another, reported, needed) in table {
            let synced = sync(live);
            assert_eq!(
                upkeep_needed(
                    previous,
                    &synced,
                    live,
                    another,
                    reported,
                    &catalog(),
                    now()
                ),
                needed,
                "{case}"
            );
        }
    }

    #[test]
    fn a_pending_switch_is_realigned_with_the_items() {
        let mut drifted = with_yearly_switch(live(3, now()));
        drifted.items[0].quantity = 6;
        let plan = plan_upkeep(Some(&drifted), &[], &[], &catalog(), now()).unwrap();
        assert!(plan.realigned);
        let Some(Step::SetCycleChangePhases(phases)) = plan.steps.last() else {
            panic!("{:?}", plan.steps);
        };
        assert_eq!(phases.next[0].quantity, 6);
        let aligned = with_yearly_switch(live(3, now()));
        assert_eq!(
            plan_upkeep(Some(&aligned), &[], &[], &catalog(), now()).unwrap(),
            UpkeepPlan::default()
        );
        // A unit item added during the pending switch joins both phases.
        let plan = plan_upkeep(
            Some(&aligned),
            &[],
            &[count("hosted_instances", 3)],
            &catalog(),
            now(),
        )
        .unwrap();
        let Some(Step::SetCycleChangePhases(phases)) = plan.steps.last() else {
            panic!("{:?}", plan.steps);
        };
        assert!(
            phases
                .next
                .iter()
                .any(|l| l.price_id == "price_hosted_instances_yearly")
        );
    }
}
