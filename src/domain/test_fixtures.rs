//! Domain values for unit tests, with the fields a test does not care about
//! filled in once.

use chrono::{DateTime, TimeDelta, Utc};

use super::catalog::{Catalog, PriceSlot};
use super::ids::OrgId;
use super::line_items::LineItem;
use super::money::Currency;
use super::organization::{ModelRestrictions, Organization};
use super::pricing::{BillingCycle, PlanId};
use super::subscription::Subscription;
use super::subscription_sync::{ProviderSchedule, ProviderSubscription, SchedulePhase};

/// A Teams organization that requires seats, with its trial ending at `trial_end`.
pub fn organization(trial_end: DateTime<Utc>) -> Organization {
    Organization {
        id: OrgId::generate(),
        name: "Acme".into(),
        plan: PlanId::new("teams"),
        trial_end,
        require_seats: true,
        sponsorship_tier: None,
        suppress_trial_messaging: false,
        instances_opted_out: false,
        restrictions: ModelRestrictions::default(),
        created_at: trial_end - TimeDelta::days(30),
    }
}

/// A monthly Teams subscription in `status` with `paid_seats` seats.
pub fn subscription(status: &str, paid_seats: i64, created_at: DateTime<Utc>) -> Subscription {
    Subscription {
        stripe_subscription_id: format!("sub_{status}"),
        status_raw: status.to_owned(),
        plan: PlanId::new("teams"),
        billing_cycle: Some(BillingCycle::Monthly),
        paid_seats,
        current_period_start: None,
        current_period_end: None,
        cancel_at_period_end: false,
        ended_at: None,
        next_payment: None,
        created_at,
        pending_seat_decrease: None,
        pending_cycle_change: None,
        schedule_id: None,
        purchaser: None,
    }
}

/// The default catalog with Stripe price ids `price_<plan>_<cycle>` and
/// `price_<item>_<cycle>`, and a free seat price on Teams.
pub fn catalog() -> Catalog {
    let toml = Catalog::DEFAULT_TOML.replacen(
        "enforces_model_restrictions = false",
        "enforces_model_restrictions = false\nfree_seat_stripe_price_ids = [\"price_teams_free_seat\"]",
        1,
    );
    Catalog::from_toml(&toml)
        .unwrap()
        .with_stripe_price_ids(|plan, slot, cycle| match slot {
            PriceSlot::Seat => Some(format!("price_{}_{}", plan.as_str(), cycle.as_str())),
            PriceSlot::UnitItem(item) => Some(format!("price_{item}_{}", cycle.as_str())),
        })
}

/// A subscription item as Stripe lists it.
pub fn item(id: &str, price: &str, amount: i64, quantity: i64, cycle: BillingCycle) -> LineItem {
    LineItem {
        item_id: Some(id.into()),
        price_id: price.into(),
        unit_amount_minor: amount,
        quantity,
        interval: Some(cycle),
    }
}

/// An active Teams Monthly subscription at Stripe with `seats` seats, in a
/// 30-day period that started a day before `now`.
pub fn live(seats: i64, now: DateTime<Utc>) -> ProviderSubscription {
    let start = now - TimeDelta::days(1);
    ProviderSubscription {
        id: "sub_1".into(),
        customer_id: "cus_1".into(),
        status_raw: "active".into(),
        currency: Currency::parse("usd").unwrap(),
        items: vec![item(
            "si_seats",
            "price_teams_monthly",
            1800,
            seats,
            BillingCycle::Monthly,
        )],
        current_period_start: Some(start),
        current_period_end: Some(start + TimeDelta::days(30)),
        cancel_at_period_end: false,
        ended_at: None,
        created_at: start,
        org_id: None,
        purchaser: None,
        kept_seats: None,
        discount_ids: vec![],
        schedule: None,
    }
}

/// Our copy of `live` as it was stored with `paid_seats` kept.
pub fn stored(live: &ProviderSubscription, paid_seats: i64) -> Subscription {
    Subscription {
        stripe_subscription_id: live.id.clone(),
        current_period_start: live.current_period_start,
        current_period_end: live.current_period_end,
        ..subscription("active", paid_seats, live.created_at)
    }
}

/// `live` with our pending switch to yearly billing at its period end.
pub fn with_yearly_switch(mut live: ProviderSubscription) -> ProviderSubscription {
    let (start, end) = (
        live.current_period_start.unwrap(),
        live.current_period_end.unwrap(),
    );
    let current: Vec<LineItem> = live.items.iter().map(phase_item).collect();
    let next = current
        .iter()
        .map(|item| LineItem {
            price_id: item.price_id.replace("monthly", "yearly"),
            unit_amount_minor: item.unit_amount_minor * 10,
            interval: Some(BillingCycle::Yearly),
            ..item.clone()
        })
        .collect();
    live.schedule = Some(ProviderSchedule {
        id: "sub_sched_1".into(),
        ours: true,
        active: true,
        phases: vec![
            SchedulePhase {
                start,
                end: Some(end),
                items: current,
            },
            SchedulePhase {
                start: end,
                end: Some(end + TimeDelta::days(365)),
                items: next,
            },
        ],
    });
    live
}

/// A subscription item as a schedule phase lists it (no item id).
pub fn phase_item(item: &LineItem) -> LineItem {
    LineItem {
        item_id: None,
        ..item.clone()
    }
}
