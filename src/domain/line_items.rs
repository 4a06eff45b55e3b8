//! What a subscription's line items mean for seats.
//!
//! A subscription can carry a paid seat item, free seat items and add-ons in
//! any order, so nothing here looks at the first item:
//! - a *seat item* has a price the catalog knows as a seat price;
//! - the *paid seat item* is a seat item with a non-zero amount; the billing
//!   cycle and the plan come from it;
//! - paid seats are the quantities of all seat items, free ones counting as
//!   seats at $0; add-ons (unknown prices) are not seats;
//! - the next payment sums every item, add-ons included.

use super::pricing::{BillingCycle, KnownSeatPrice, PlanId};

/// One line of a subscription as the billing provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// The provider's id of the item, when it is a subscription's item
    /// (schedule phases have none).
    pub item_id: Option<String>,
    pub price_id: String,
    pub unit_amount_minor: i64,
    pub quantity: i64,
    /// The price's recurring interval, when it is monthly or yearly.
    pub interval: Option<BillingCycle>,
}

/// What the items say about seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatTerms {
    /// The plan of the paid seat item (else of a free seat item).
    pub plan: Option<PlanId>,
    pub cycle: Option<BillingCycle>,
    pub paid_seats: i64,
    pub next_payment_minor: i64,
    /// The item the plan and cycle were read from: the one a seat change or
    /// a cycle change acts on.
    pub seat_item: Option<LineItem>,
}

/// Reads `items`; `seat_price` tells which price ids are seat prices.
pub fn seat_terms(
    items: &[LineItem],
    seat_price: impl Fn(&str) -> Option<KnownSeatPrice>,
) -> SeatTerms {
    let seat_items: Vec<(&LineItem, KnownSeatPrice)> = items
        .iter()
        .filter_map(|item| seat_price(&item.price_id).map(|known| (item, known)))
        .collect();
    // The deciding item: a paid one before a free one, then the largest,
    // then the lowest price id, so the answer never depends on the order
    // Stripe lists items in.
    let deciding = seat_items
        .iter()
        .max_by_key(|(item, _)| {
            (
                item.unit_amount_minor > 0,
                item.quantity * item.unit_amount_minor,
                std::cmp::Reverse(&item.price_id),
            )
        })
        .map(|(item, known)| {
            (
                item.interval.unwrap_or(known.cycle),
                known.plan.clone(),
                (*item).clone(),
            )
        });
    SeatTerms {
        cycle: deciding.as_ref().map(|(cycle, _, _)| *cycle),
        plan: deciding.as_ref().map(|(_, plan, _)| plan.clone()),
        seat_item: deciding.map(|(_, _, item)| item),
        paid_seats: seat_items.iter().map(|(item, _)| item.quantity).sum(),
        next_payment_minor: items
            .iter()
            .map(|item| item.unit_amount_minor * item.quantity)
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(price_id: &str, amount: i64, quantity: i64, interval: BillingCycle) -> LineItem {
        LineItem {
            item_id: None,
            price_id: price_id.into(),
            unit_amount_minor: amount,
            quantity,
            interval: Some(interval),
        }
    }

    fn catalog(price_id: &str) -> Option<KnownSeatPrice> {
        let (plan, cycle) = match price_id {
            "price_teams_monthly" => ("teams", BillingCycle::Monthly),
            "price_teams_yearly" => ("teams", BillingCycle::Yearly),
            "price_teams_free_seat" => ("teams", BillingCycle::Monthly),
            "price_enterprise_monthly" => ("enterprise", BillingCycle::Monthly),
            _ => return None,
        };
        Some(KnownSeatPrice {
            plan: PlanId::new(plan),
            cycle,
        })
    }

    /// Every ordering of `items`.
    fn orderings(items: &[LineItem]) -> Vec<Vec<LineItem>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut tail in orderings(&rest) {
                tail.insert(0, first.clone());
                all.push(tail);
            }
        }
        all
    }

    #[test]
    fn paid_seat_free_seat_and_add_on_read_the_same_in_every_order() {
        let items = [
            item("price_addon_agent", 500, 1, BillingCycle::Monthly),
            item("price_teams_free_seat", 0, 2, BillingCycle::Monthly),
            item("price_teams_monthly", 1800, 3, BillingCycle::Monthly),
        ];
        let expected = SeatTerms {
            plan: Some(PlanId::new("teams")),
            cycle: Some(BillingCycle::Monthly),
            paid_seats: 5,
            next_payment_minor: 3 * 1800 + 500,
            seat_item: Some(items[2].clone()),
        };
        let all = orderings(&items);
        assert_eq!(all.len(), 6);
        for order in all {
            assert_eq!(seat_terms(&order, catalog), expected, "{order:?}");
        }
    }

    #[test]
    fn the_cycle_and_plan_follow_the_paid_seat_item_not_an_add_on() {
        // A yearly add-on listed first must not make a monthly seat subscription yearly.
        let items = [
            item("price_addon_yearly", 9900, 1, BillingCycle::Yearly),
            item("price_enterprise_monthly", 7200, 2, BillingCycle::Monthly),
        ];
        let terms = seat_terms(&items, catalog);
        assert_eq!(terms.cycle, Some(BillingCycle::Monthly));
        assert_eq!(terms.plan, Some(PlanId::new("enterprise")));
        assert_eq!(terms.paid_seats, 2);
        assert_eq!(terms.next_payment_minor, 9900 + 14400);
    }

    #[test]
    fn journeys_figures() {
        let cases = [
            ("price_teams_monthly", 1800, 3, BillingCycle::Monthly, 5400),
            ("price_teams_yearly", 18000, 5, BillingCycle::Yearly, 90000),
            ("price_teams_monthly", 1800, 5, BillingCycle::Monthly, 9000),
            (
                "price_enterprise_monthly",
                7200,
                2,
                BillingCycle::Monthly,
                14400,
            ),
        ];
        for (price, amount, seats, cycle, next) in cases {
            let terms = seat_terms(&[item(price, amount, seats, cycle)], catalog);
            assert_eq!(
                (terms.paid_seats, terms.next_payment_minor),
                (seats, next),
                "{price}"
            );
            assert_eq!(terms.cycle, Some(cycle));
        }
    }

    #[test]
    fn only_free_seats_or_no_seats_at_all() {
        let free = seat_terms(
            &[item("price_teams_free_seat", 0, 4, BillingCycle::Monthly)],
            catalog,
        );
        assert_eq!(free.paid_seats, 4);
        assert_eq!(free.plan, Some(PlanId::new("teams")));
        assert_eq!(free.next_payment_minor, 0);
        let add_on_only = seat_terms(
            &[item("price_addon", 500, 1, BillingCycle::Monthly)],
            catalog,
        );
        assert_eq!(
            add_on_only,
            SeatTerms {
                plan: None,
                cycle: None,
                paid_seats: 0,
                next_payment_minor: 500,
                seat_item: None,
            }
        );
    }
}
